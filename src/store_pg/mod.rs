//! The PostgreSQL store, selected by `PLANBOT_DATABASE_URL`: the same [`SessionStore`] as
//! `planning.json`, one row per chat, for a team that wants its plans in a database it already
//! backs up (and, as the replicas issue goes on, for several planbots at once).
//!
//! The URL's own options are honoured (`sslmode=disable|prefer|require`, `connect_timeout`, …);
//! TLS is rustls with the Mozilla roots. Migrations are embedded and applied at start-up under an
//! advisory lock, each in its own transaction, recorded in `planbot_migrations`. A commit is
//! durable when it returns (PostgreSQL's `synchronous_commit`, on by default).
//!
//! Chats are leased ([`PgStore::acquire`]): a lease names its holder (one planbot process, by a
//! random id) and an epoch that grows each time the chat changes hands. Every plan written
//! carries the epoch of the lease it was written under, and a trigger refuses the write when a
//! lease on the chat has a different epoch, so a planbot that was paused or cut off past its
//! lease can never overwrite the new holder's plan ([`StoreError::LeaseLost`]). A chat no one
//! ever leased is written freely, as one planbot alone does.
//!
//! Every admitted event is kept in `planbot_inbound` ([`Inbox`]) until handled, and announced
//! on a channel the other replicas listen to ([`Shared`]). Replicas are for Telegram's webhook
//! alone; with long polling or the Discord gateway one planbot uses a database: it holds a
//! session-level advisory lock for as long as it runs, and a second one refuses to start.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::chat::ChatKey;
use crate::config::Secret;
use crate::planning::state::SessionEntry;
use crate::store::{SessionStore, StoreError};
use crate::sync::Locked;

mod replicas;

/// The schema, in order; a database records how far it got.
const MIGRATIONS: [(i32, &str); 4] = [
    (
        1,
        "CREATE TABLE planbot_sessions (
            chat text PRIMARY KEY,
            entry jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )",
    ),
    (
        2,
        "CREATE TABLE planbot_leases (
            chat text PRIMARY KEY,
            holder text NOT NULL,
            epoch bigint NOT NULL,
            expires_at timestamptz NOT NULL
        );
        ALTER TABLE planbot_sessions ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
        CREATE FUNCTION planbot_fence() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE current bigint;
        BEGIN
            SELECT epoch INTO current FROM planbot_leases WHERE chat = NEW.chat;
            IF FOUND AND current <> NEW.epoch THEN
                RAISE EXCEPTION 'planbot: the lease on % is at epoch %, not %',
                    NEW.chat, current, NEW.epoch USING ERRCODE = 'PB001';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER planbot_fence BEFORE INSERT OR UPDATE ON planbot_sessions
            FOR EACH ROW EXECUTE FUNCTION planbot_fence();",
    ),
    (
        3,
        "CREATE TABLE planbot_inbound (
            id bigserial PRIMARY KEY,
            event text UNIQUE,
            chat text NOT NULL,
            inbound jsonb NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            done_at timestamptz
        );
        CREATE INDEX planbot_inbound_pending ON planbot_inbound (id) WHERE done_at IS NULL;",
    ),
    (
        4,
        "CREATE TABLE planbot_audit (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL,
            user_key text NOT NULL,
            cost_usd double precision NOT NULL,
            line jsonb NOT NULL
        );
        CREATE INDEX planbot_audit_at ON planbot_audit (at);",
    ),
];
/// Handled events are kept this long, so that a redelivery within it is still recognised.
const INBOUND_KEPT: &str = "2 days";
/// How long a lease lasts unless renewed, by default (`PLANBOT_LEASE_SECS`).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(15);
/// The channel kept events are announced on (the payload is the chat).
const WAKE_UP: &str = "planbot_inbound";
/// The SQLSTATE the fence raises.
const FENCED: &str = "PB001";
/// The longest planbot waits for a connection (to open one, or for one of the pool's).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The advisory lock key of migrations (any constant; "planbot" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6c61_6e62_6f74;
/// The advisory lock key held by the one planbot using the database.
const INSTANCE_LOCK: i64 = MIGRATION_LOCK + 1;

/// A database error as the operator reads it: the server's message, never the URL.
fn db_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("{what}: {e}"))
}

/// Plans in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// For the connection that listens for kept events.
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// How long a lease lasts unless renewed.
    lease: std::time::Duration,
    /// This process's name in the leases it holds.
    holder: String,
    /// The chats whose lease this process holds, with the lease's epoch.
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

/// What `planbot check` reports about the database.
#[derive(Debug, Clone, PartialEq)]
pub struct PgStatus {
    /// `host:port/dbname`, without credentials.
    pub target: String,
    pub version: i32,
    pub latest: i32,
    pub sessions: i64,
}

/// `host:port/dbname` of a URL, for messages (no user, no password).
pub fn describe_url(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(config) => {
            let host = config
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let db = config.get_dbname().unwrap_or("postgres");
            format!("{host}:{port}/{db}")
        }
        Err(_) => "an unreadable PLANBOT_DATABASE_URL".into(),
    }
}

impl PgStore {
    /// A pool of at most `size` connections to `url` (nothing is connected yet).
    pub fn new(url: &Secret, size: usize) -> Result<PgStore, StoreError> {
        let config = tokio_postgres::Config::from_str(url.expose())
            .map_err(|e| db_error("PLANBOT_DATABASE_URL", e))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| db_error("TLS", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // A database that does not answer must not hang start-up or `planbot check`.
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| db_error("the connection pool", e))?;
        Ok(PgStore {
            pool,
            config,
            tls,
            lease: DEFAULT_LEASE,
            holder: uuid::Uuid::new_v4().to_string(),
            held: Default::default(),
        })
    }

    /// The same store with leases of `lease` (`PLANBOT_LEASE_SECS`).
    pub fn with_lease(mut self, lease: std::time::Duration) -> PgStore {
        self.lease = lease;
        self
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| db_error("could not reach PostgreSQL", e))
    }

    /// Runs one query on a pooled connection; `what` names it in the error.
    async fn rows(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.client()
            .await?
            .query(sql, params)
            .await
            .map_err(|e| db_error(what, e))
    }

    /// [`PgStore::rows`] for a query of exactly one row.
    async fn row(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.client()
            .await?
            .query_one(sql, params)
            .await
            .map_err(|e| db_error(what, e))
    }

    /// [`PgStore::rows`] for a query of at most one row.
    async fn row_opt(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        self.client()
            .await?
            .query_opt(sql, params)
            .await
            .map_err(|e| db_error(what, e))
    }

    /// [`PgStore::rows`] for a statement; how many rows it changed.
    async fn run(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute(sql, params)
            .await
            .map_err(|e| db_error(what, e))
    }

    /// Applies the migrations this database lacks; returns its version.
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("migrating", e))?;
        // One migrating planbot at a time (replicas start together); the lock ends with the
        // transaction, and covers creating the table of versions too.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| db_error("migrating", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS planbot_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(|e| db_error("creating planbot_migrations", e))?;
        let mut version = current_version(&tx).await?;
        for (step, sql) in MIGRATIONS {
            if step <= version {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| db_error(&format!("migration {step}"), e))?;
            tx.execute(
                "INSERT INTO planbot_migrations (version) VALUES ($1)",
                &[&step],
            )
            .await
            .map_err(|e| db_error(&format!("migration {step}"), e))?;
            version = step;
        }
        tx.commit().await.map_err(|e| db_error("migrating", e))?;
        Ok(version)
    }

    /// Reachable, how far migrated, how many plans: for `planbot check` (changes nothing).
    pub async fn status(&self, url: &Secret) -> Result<PgStatus, StoreError> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('planbot_migrations') IS NOT NULL", &[])
            .await
            .map_err(|e| db_error("reading the schema", e))?
            .get(0);
        let version = if exists {
            current_version(&client).await?
        } else {
            0
        };
        let sessions = if version >= 1 { self.count().await? } else { 0 };
        Ok(PgStatus {
            target: describe_url(url.expose()),
            version,
            latest: latest_version(),
            sessions,
        })
    }

    /// Holds the database for this planbot until it exits: a second planbot on the same database
    /// is refused (replicas need chat leases first). The returned client keeps the lock.
    pub async fn claim(&self) -> Result<deadpool_postgres::Object, StoreError> {
        // A connection kept out of the pool: the lock lives as long as it does.
        let client = self.client().await?;
        let held: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&INSTANCE_LOCK])
            .await
            .map_err(|e| db_error("claiming the database", e))?
            .get(0);
        if !held {
            return Err(StoreError::Database(
                "another planbot already uses this database; one planbot per database until replicas are supported".into(),
            ));
        }
        Ok(client)
    }

    /// At start-up, as the file store does: a turn that was running when planbot stopped is
    /// marked interrupted, so the next message resumes it (not while a live lease says another
    /// planbot runs it). Returns the chats marked.
    pub async fn recover(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .rows(
                "marking interrupted turns",
                "UPDATE planbot_sessions s SET entry = jsonb_set(entry, '{status}', '\"interrupted\"'),
                     epoch = coalesce((SELECT epoch FROM planbot_leases l WHERE l.chat = s.chat), s.epoch),
                     updated_at = now()
                 WHERE entry->>'status' = 'running' AND NOT EXISTS
                     (SELECT 1 FROM planbot_leases l WHERE l.chat = s.chat AND l.expires_at > now())
                 RETURNING chat",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// How many plans the database holds (`migrate-state` refuses to overwrite any).
    pub async fn count(&self) -> Result<i64, StoreError> {
        let row = self
            .row(
                "counting plans",
                "SELECT count(*) FROM planbot_sessions",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// How many audit lines the database holds (`migrate-state` refuses to add to any).
    pub async fn audit_count(&self) -> Result<i64, StoreError> {
        let row = self
            .row(
                "counting audit lines",
                "SELECT count(*) FROM planbot_audit",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The entry a one-row statement on `chat` returns (`SELECT`, or `DELETE … RETURNING`).
    async fn entry_where(
        &self,
        sql: &str,
        chat: &ChatKey,
        what: &str,
    ) -> Result<Option<SessionEntry>, StoreError> {
        let key = chat.to_string();
        let client = self.client().await?;
        let row = client
            .query_opt(sql, &[&key])
            .await
            .map_err(|e| db_error(what, e))?;
        row.map(|r| decode(&key, r.get(0))).transpose()
    }

    /// Copies plans in, all or none.
    pub async fn import(
        &self,
        sessions: &BTreeMap<String, SessionEntry>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("importing", e))?;
        for (chat, entry) in sessions {
            let json = serde_json::to_value(entry).map_err(|e| db_error("encoding a plan", e))?;
            tx.execute(
                "INSERT INTO planbot_sessions (chat, entry) VALUES ($1, $2)",
                &[chat, &json],
            )
            .await
            .map_err(|e| db_error(&format!("importing {chat}"), e))?;
        }
        tx.commit().await.map_err(|e| db_error("importing", e))
    }
}

fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

async fn current_version(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i32, StoreError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM planbot_migrations",
            &[],
        )
        .await
        .map_err(|e| db_error("reading the schema version", e))?;
    Ok(row.get(0))
}

fn decode(chat: &str, value: serde_json::Value) -> Result<SessionEntry, StoreError> {
    serde_json::from_value(value).map_err(|e| db_error(&format!("the plan of {chat}"), e))
}

fn key_of(chat: &str) -> ChatKey {
    match chat.split_once(':') {
        Some((adapter, channel)) => ChatKey::new(adapter, channel),
        None => ChatKey::new(chat, ""),
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn get(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError> {
        let sql = "SELECT entry FROM planbot_sessions WHERE chat = $1";
        self.entry_where(sql, chat, "reading a plan").await
    }

    async fn put(&self, chat: &ChatKey, entry: SessionEntry) -> Result<(), StoreError> {
        let key = chat.to_string();
        let json = serde_json::to_value(&entry).map_err(|e| db_error("encoding a plan", e))?;
        let epoch = self.epoch(&key);
        let client = self.client().await?;
        let saved = client
            .execute(
                "INSERT INTO planbot_sessions (chat, entry, epoch) VALUES ($1, $2, $3)
                 ON CONFLICT (chat) DO UPDATE SET entry = EXCLUDED.entry,
                     epoch = EXCLUDED.epoch, updated_at = now()",
                &[&key, &json, &epoch],
            )
            .await;
        match saved {
            Ok(_) => Ok(()),
            Err(e) if e.code().is_some_and(|c| c.code() == FENCED) => {
                self.held.locked().remove(&key);
                Err(StoreError::LeaseLost(key))
            }
            Err(e) => Err(db_error("saving a plan", e)),
        }
    }

    async fn remove(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError> {
        let key = chat.to_string();
        let client = self.client().await?;
        // The fence of a delete: only under the current lease, if the chat has one.
        let row = client
            .query_one(
                "WITH fenced AS (
                     SELECT EXISTS (SELECT 1 FROM planbot_leases WHERE chat = $1 AND epoch <> $2) AS stale
                 ), gone AS (
                     DELETE FROM planbot_sessions WHERE chat = $1
                         AND NOT (SELECT stale FROM fenced) RETURNING entry
                 )
                 SELECT (SELECT stale FROM fenced), (SELECT entry FROM gone)",
                &[&key, &self.epoch(&key)],
            )
            .await
            .map_err(|e| db_error("removing a plan", e))?;
        if row.get::<_, bool>(0) {
            self.held.locked().remove(&key);
            return Err(StoreError::LeaseLost(key));
        }
        row.get::<_, Option<serde_json::Value>>(1)
            .map(|entry| decode(&key, entry))
            .transpose()
    }

    async fn all(&self) -> Result<Vec<(ChatKey, SessionEntry)>, StoreError> {
        let rows = self
            .rows(
                "listing plans",
                "SELECT chat, entry FROM planbot_sessions ORDER BY chat",
                &[],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let chat: String = r.get(0);
                let entry = decode(&chat, r.get(1))?;
                Ok((key_of(&chat), entry))
            })
            .collect()
    }
}
