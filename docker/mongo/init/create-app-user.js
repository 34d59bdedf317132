// Run by the mongo image once, when its data volume is new (/docker-entrypoint-initdb.d), as root.
// The pipeline connects as this user, who may read and write its own database only.
const database = process.env.MONGO_DATABASE;
db.getSiblingDB(database).createUser({
  user: process.env.MONGO_APP_USERNAME,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{ role: "readWrite", db: database }],
});
