//! A fresh Postgres database per test, loaded with MediaCMS's real schema (`schema.sql` from its
//! migrations) plus the default profiles or the reference upload; dropped on Drop.
//!
//! Loading the dumps takes seconds on a busy machine, so each fixture combination is loaded once
//! into a template database `mcw_tpl_<data>_<md5 of the files>` (kept between runs; a changed
//! fixture gets a new name) and every test database is a `CREATE DATABASE … TEMPLATE` copy.
//!
//! Server: `PGHOST`/`PGPORT`/`PGUSER`/`PGPASSWORD`, default `127.0.0.1:5432`, user `postgres`
//! (trust auth). Fixtures: `$MEDIACMS_SHARED/mediacms/`, default `<crate>/tests/fixtures/mediacms/` (see its PROVENANCE.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use mediacms_worker::config::PostgresConfig;

/// MediaCMS's production MEDIA_ROOT, the prefix of absolute paths inside the fixtures.
pub const FIXTURE_MEDIA_ROOT: &str = "/home/mediacms.io/mediacms/media_files/";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The reference-data root: `$MEDIACMS_SHARED`, else the in-repo copy `tests/fixtures`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDIACMS_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")),
    }
}

fn fixture(name: &str) -> PathBuf {
    shared_dir().join("mediacms").join(name)
}

pub struct TestDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

impl TestDb {
    /// Schema + the 23 default encode profiles.
    pub async fn new() -> Self {
        Self::with_data("encode_profiles.sql").await
    }

    /// Schema + the reference upload (1 user, 2 media, 13 encodings, the profiles).
    pub async fn with_upload_example() -> Self {
        Self::with_data("upload_example.sql").await
    }

    async fn with_data(data: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let db = TestDb {
            host: std::env::var("PGHOST").unwrap_or_else(|_| "127.0.0.1".into()),
            port: std::env::var("PGPORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
            user: std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()),
            password: std::env::var("PGPASSWORD").unwrap_or_default(),
            dbname: format!(
                "mcw_test_{}_{}_{:08x}",
                std::process::id(),
                n,
                rand::random::<u32>()
            ),
        };
        let template = db.template(data).await;
        let create = format!("CREATE DATABASE {} TEMPLATE {template}", db.dbname);
        db.psql("postgres", &["-c", &create]).await;
        db
    }

    /// The template holding schema + `data`, created (race-safely: load under a private name,
    /// then rename) when missing.
    async fn template(&self, data: &str) -> String {
        use md5::{Digest, Md5};
        let files = [fixture("schema.sql"), fixture(data)];
        let mut hash = Md5::new();
        for f in &files {
            hash.update(std::fs::read(f).unwrap_or_else(|e| panic!("fixture {f:?}: {e}")));
        }
        let stem = data.trim_end_matches(".sql");
        let name = format!("mcw_tpl_{stem}_{}", &hex::encode(hash.finalize())[..12]);
        let admin = self.admin().await;
        let exists = "SELECT 1 FROM pg_database WHERE datname = $1";
        if admin.query_opt(exists, &[&name]).await.unwrap().is_some() {
            return name;
        }
        let tmp = format!(
            "{name}_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        self.psql("postgres", &["-c", &format!("CREATE DATABASE {tmp}")])
            .await;
        let mut args = vec!["-1".to_owned()];
        for f in &files {
            args.push("-f".into());
            args.push(f.to_str().expect("utf-8 fixture path").into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.psql(&tmp, &args).await;
        let rename = format!("ALTER DATABASE {tmp} RENAME TO {name}");
        if admin.batch_execute(&rename).await.is_err() {
            // Another test created it meanwhile.
            let _ = admin.batch_execute(&format!("DROP DATABASE {tmp}")).await;
        }
        name
    }

    async fn admin(&self) -> tokio_postgres::Client {
        self.connect("postgres").await
    }

    async fn psql(&self, dbname: &str, args: &[&str]) {
        let out = tokio::process::Command::new("psql")
            .args(self.base_args(dbname))
            .args(args)
            .output()
            .await
            .expect("psql (postgresql-client) must be installed");
        assert!(
            out.status.success(),
            "psql {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn base_args(&self, dbname: &str) -> Vec<String> {
        vec![
            "-X".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-q".into(),
            "-h".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            self.user.clone(),
            "-d".into(),
            dbname.into(),
        ]
    }

    /// The worker's config for this database.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            host: self.host.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }

    /// A fresh connection (default `search_path`, unlike the one that loaded the dumps).
    pub async fn client(&self) -> tokio_postgres::Client {
        self.connect(&self.dbname).await
    }

    async fn connect(&self, dbname: &str) -> tokio_postgres::Client {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(dbname);
        if !self.password.is_empty() {
            cfg.password(&self.password);
        }
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to test db");
        tokio::spawn(conn);
        client
    }

    /// Rewrites the fixtures' absolute paths (chunk paths, chunks_info, media_info) from
    /// MediaCMS's production MEDIA_ROOT to `media_root` (which must end without a slash).
    pub async fn rebase_media_root(&self, media_root: &Path) {
        let new = format!("{}/", media_root.display());
        let c = self.client().await;
        c.execute(
            "UPDATE files_encoding SET chunk_file_path = replace(chunk_file_path, $1, $2), \
             chunks_info = replace(chunks_info, $1, $2)",
            &[&FIXTURE_MEDIA_ROOT, &new],
        )
        .await
        .expect("rebase files_encoding");
        c.execute(
            "UPDATE files_media SET media_info = replace(media_info, $1, $2)",
            &[&FIXTURE_MEDIA_ROOT, &new],
        )
        .await
        .expect("rebase files_media");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: FORCE ends the pool's connections still open.
        let _ = Command::new("psql")
            .args(self.base_args("postgres"))
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.dbname),
            ])
            .output();
    }
}
