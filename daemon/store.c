// store.c: trouped's job table in SQLite.
//
// Design notes.
//
// One writer, one thread. Every write (Submit, a state change) is an op
// queued under s_mu; the store thread takes everything queued (at most
// TRD_STORE_BATCH_MAX), runs it in one BEGIN IMMEDIATE … COMMIT, and only
// then calls the ops' done callbacks. So a reply sent from a callback never
// acknowledges what is not on disk, and the fdatasync that synchronous=FULL
// makes at COMMIT is paid once per batch, not once per op: the more callers
// wait, the more each commit carries (group commit). Workers never touch
// SQLite.
//
// Each op runs inside a SAVEPOINT of its own: an op that is wrong (a batch
// that names a job it lacks, a second final record) is rolled back to its
// savepoint and answered with its error, and the rest of the batch commits.
// An error of the transaction itself (disk full, IO error, a lock) rolls
// the whole transaction back and answers every op of the batch with it; the
// thread then goes on with the next batch, so a disk that fills up and is
// freed again needs no restart.
//
// The count of unfinished (queued or running) jobs, for the cap on them,
// is kept exact without a query per Submit: counted once at open (the
// jobs_unfinished index makes it O(unfinished)), then moved only by what
// commits. An op adds its change to the batch's s_delta, an op rolled
// back to its savepoint takes its change back out, and s_delta reaches
// s_unfinished only once COMMIT has returned; a batch rolled back whole
// drops it. A Submit's check counts the batch's earlier ops, so two
// Submits in one batch cannot both take the last room.
//
// Reads use a second connection (read-only) under s_rd_mu: WAL lets it read
// the last committed state while the writer writes, and one statement's
// rows come from one snapshot. Point reads by id (trd_store_get, which the
// runner makes on a worker) have a third one of their own under s_pt_mu,
// so they never wait behind a List page being read on the blocking pool.
//
// Nothing is written to a file that has not been read first: open reads
// the schema version and runs quick_check before it switches the journal
// to WAL or migrates, so a file that is not ours, is damaged or is newer is
// left byte for byte as it was. Migrations are a table of functions, one
// per version, each run with its PRAGMA user_version in one transaction.
//
// Statements are prepared once and reused; SQL text is never built from
// user data (only PRAGMA values, which cannot be bound, are formatted, and
// they are integers of ours). The daemon sees the public headers only, so
// memory comes from malloc, not from the runtime's tr_alloc.
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>
#include <troupe/v1/job.pb-c.h>

// ---------------------------------------------------------------------------
// Schema and migrations.

// Version 1: the job table, the request ids, labels and dependency edges.
// jobs.id is AUTOINCREMENT so that an id is never handed out twice, even
// once old jobs are pruned: a client that holds an id must not find
// another job under it.
static const char schema_v1[] =
    "CREATE TABLE schema_migrations("
    "  version INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  applied_ms INTEGER NOT NULL);"
    "CREATE TABLE requests("
    "  request_id TEXT PRIMARY KEY NOT NULL,"
    "  first_job INTEGER NOT NULL,"
    "  job_count INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE jobs("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  request_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  grp TEXT NOT NULL,"
    "  priority INTEGER NOT NULL,"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 6),"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL DEFAULT 0,"
    "  ended_ms INTEGER NOT NULL DEFAULT 0,"
    "  next_run_ms INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT 0,"
    "  signal INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT NOT NULL DEFAULT '',"
    "  leader_pid INTEGER NOT NULL DEFAULT 0,"
    "  leader_start INTEGER NOT NULL DEFAULT 0,"
    "  stdout_bytes INTEGER NOT NULL DEFAULT 0,"
    "  stderr_bytes INTEGER NOT NULL DEFAULT 0,"
    "  truncated INTEGER NOT NULL DEFAULT 0,"
    "  spec BLOB NOT NULL);"
    // Unfinished jobs only (queued, running): the recovery scan and the
    // scheduler's queries stay small however many finished jobs pile up.
    "CREATE INDEX jobs_unfinished ON jobs(id) WHERE state < 2;"
    "CREATE INDEX jobs_group ON jobs(grp, id);"
    "CREATE INDEX jobs_created ON jobs(created_ms);"
    "CREATE TABLE job_labels("
    "  job INTEGER NOT NULL REFERENCES jobs(id),"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (job, key, value)) WITHOUT ROWID;"
    "CREATE INDEX job_labels_kv ON job_labels(key, value, job);"
    "CREATE TABLE deps("
    "  job INTEGER NOT NULL REFERENCES jobs(id),"
    "  after_job INTEGER NOT NULL REFERENCES jobs(id),"
    "  PRIMARY KEY (job, after_job)) WITHOUT ROWID;"
    "CREATE INDEX deps_after ON deps(after_job);";

static int
migrate_v1(sqlite3 *db)
{
    return sqlite3_exec(db, schema_v1, NULL, NULL, NULL);
}

// Version 2: the groups' settings (paused; parallel, 0: the daemon's
// default), so that they outlive a restart. A group without a row has the
// defaults: a v1 database needs no rows, and a group no Submit named keeps
// none.
static const char schema_v2[] = "CREATE TABLE groups("
                                "  name TEXT PRIMARY KEY NOT NULL,"
                                "  paused INTEGER NOT NULL DEFAULT 0,"
                                "  parallel INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;";

static int
migrate_v2(sqlite3 *db)
{
    return sqlite3_exec(db, schema_v2, NULL, NULL, NULL);
}

// migrations[i] takes the schema from version i to i + 1. Version N + 1 is
// one more function and one more row here (and TRD_STORE_SCHEMA + 1).
static const struct migration {
    const char *m_name;
    int (*m_fn)(sqlite3 *db);
} migrations[] = {
    {"jobs, requests, job_labels, deps", migrate_v1},
    {"groups", migrate_v2},
};
_Static_assert(sizeof migrations / sizeof migrations[0] == TRD_STORE_SCHEMA,
               "one migration per schema version");

// ---------------------------------------------------------------------------
// Statements.

#define JOB_COLS                                                                        \
    "j.id, j.request_id, j.name, j.grp, j.priority, j.state, j.attempt, j.created_ms, " \
    "j.started_ms, j.ended_ms, j.next_run_ms, j.exit_code, j.signal, j.error, "         \
    "j.leader_pid, j.leader_start, j.stdout_bytes, j.stderr_bytes, j.truncated, j.spec"

// The filters every list variant applies (?2 a state mask, ?3 a group, ?4 a
// name prefix, ?5/?6 a label, NULL: any); then its order (by the column
// its index yields, so that no sort is needed) and its page (?7).
#define LIST_TAIL                                                               \
    " AND ((?2 >> j.state) & 1) = 1 AND (?3 IS NULL OR j.grp = ?3)"             \
    " AND (?4 IS NULL OR substr(j.name, 1, length(?4)) = ?4)"                   \
    " AND (?5 IS NULL OR EXISTS (SELECT 1 FROM job_labels x WHERE x.job = j.id" \
    " AND x.key = ?5 AND x.value = ?6))"
#define BY_ID " ORDER BY j.id LIMIT ?7"

enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_FIND_REQUEST,
    W_INSERT_REQUEST,
    W_INSERT_JOB,
    W_INSERT_LABEL,
    W_INSERT_DEP,
    W_START,
    W_FINISH,
    W_RETRY,
    W_STATE,
    W_GROUP,
    W_COUNT
};

static const char *const w_sql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT op",
    [W_RELEASE] = "RELEASE op",
    [W_ROLLBACK_TO] = "ROLLBACK TO op",
    [W_FIND_REQUEST] = "SELECT first_job, job_count FROM requests WHERE request_id = ?1",
    [W_INSERT_REQUEST] = "INSERT INTO requests(request_id, first_job, job_count, created_ms)"
                         " VALUES (?1, ?2, ?3, ?4)",
    [W_INSERT_JOB] = "INSERT INTO jobs(request_id, name, grp, priority, state, created_ms, spec)"
                     " VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
    [W_INSERT_LABEL] = "INSERT OR IGNORE INTO job_labels(job, key, value) VALUES (?1, ?2, ?3)",
    [W_INSERT_DEP] = "INSERT OR IGNORE INTO deps(job, after_job) VALUES (?1, ?2)",
    [W_START] = "UPDATE jobs SET state = 1, attempt = ?2, leader_pid = ?3, leader_start = ?4,"
                " started_ms = ?5, next_run_ms = 0 WHERE id = ?1 AND state = 0",
    [W_FINISH] = "UPDATE jobs SET state = ?2, ended_ms = ?3, exit_code = ?4, signal = ?5,"
                 " error = ?6, stdout_bytes = ?7, stderr_bytes = ?8, truncated = ?9"
                 " WHERE id = ?1 AND state < 2",
    [W_RETRY] = "UPDATE jobs SET state = 0, attempt = ?2, next_run_ms = ?3, exit_code = ?4,"
                " signal = ?5, error = ?6, leader_pid = 0, leader_start = 0"
                " WHERE id = ?1 AND state = 1",
    [W_STATE] = "SELECT state FROM jobs WHERE id = ?1",
    // A group's settings: ?2 paused, ?3 parallel; NULL keeps what is
    // stored (a new row: the default, 0).
    [W_GROUP] = "INSERT INTO groups(name, paused, parallel) VALUES (?1, coalesce(?2, 0),"
                " coalesce(?3, 0)) ON CONFLICT(name) DO UPDATE SET"
                " paused = coalesce(?2, paused), parallel = coalesce(?3, parallel)",
};

enum {
    R_GET,
    R_UNFINISHED,
    R_LIST_ALL,
    R_LIST_UNFINISHED,
    R_LIST_GROUP,
    R_LIST_LABEL,
    R_GROUPS,
    R_COUNT
};

static const char *const r_sql[R_COUNT] = {
    [R_GET] = "SELECT " JOB_COLS " FROM jobs j WHERE j.id = ?1",
    [R_UNFINISHED] = "SELECT " JOB_COLS " FROM jobs j WHERE j.state < 2 ORDER BY j.id",
    // One variant per index that can drive the scan; each applies every
    // filter (LIST_TAIL), so the choice changes the plan, not the rows.
    [R_LIST_ALL] = "SELECT " JOB_COLS " FROM jobs j WHERE j.id > ?1" LIST_TAIL BY_ID,
    [R_LIST_UNFINISHED] =
        "SELECT " JOB_COLS " FROM jobs j WHERE j.state < 2 AND j.id > ?1" LIST_TAIL BY_ID,
    [R_LIST_GROUP] =
        "SELECT " JOB_COLS " FROM jobs j WHERE j.grp = ?3 AND j.id > ?1" LIST_TAIL BY_ID,
    [R_LIST_LABEL] =
        "SELECT " JOB_COLS " FROM job_labels l JOIN jobs j ON j.id = l.job"
        " WHERE l.key = ?5 AND l.value = ?6 AND l.job > ?1" LIST_TAIL " ORDER BY l.job LIMIT ?7",
    [R_GROUPS] = "SELECT name, paused, parallel FROM groups ORDER BY name",
};

// ---------------------------------------------------------------------------
// The store.

typedef enum op_kind { OP_SUBMIT, OP_UPDATE, OP_MAX_SIZE, OP_GROUP } op_kind;

typedef struct op {
    struct op *o_next; // the queue, under s_mu
    op_kind o_kind;
    trd_done_fn o_done;
    void *o_arg;
    // The outcome, written by the store thread, read by the callback.
    tr_err o_err;
    trd_submit_result o_res;
    char o_detail[200];
    union {
        struct {
            char *rid; // in this allocation
            unsigned char *batch;
            size_t len;
        } o_sub;
        trd_job_update o_upd; // u_error points into this allocation
        uint64_t o_max_bytes;
        struct {
            const char *name; // in this allocation
            bool paused;
            bool set_parallel;
            uint32_t parallel;
        } o_grp;
    };
} op;

#define HIST_BUCKETS 40

struct trd_store {
    sqlite3 *s_db;              // the writer: the store thread's (open's before it starts)
    sqlite3_stmt *s_w[W_COUNT]; // the writer's statements, same owner
    sqlite3 *s_rd;              // the read connection, under s_rd_mu
    sqlite3_stmt *s_r[R_COUNT]; // under s_rd_mu
    pthread_mutex_t s_rd_mu;
    sqlite3 *s_pt;              // the point-read connection, under s_pt_mu
    sqlite3_stmt *s_p[R_COUNT]; // under s_pt_mu (only R_GET is used)
    pthread_mutex_t s_pt_mu;
    pthread_mutex_t s_mu; // the queue
    pthread_cond_t s_cv;  // signalled when an op is queued or close begins
    op *s_head;           // under s_mu
    op **s_tail;          // under s_mu
    bool s_closing;       // under s_mu
    pthread_t s_thr;
    pthread_mutex_t s_st_mu;       // the counters below
    uint64_t s_commits;            // under s_st_mu
    uint64_t s_ops;                // under s_st_mu
    uint64_t s_failed;             // under s_st_mu
    uint64_t s_ops_max;            // under s_st_mu
    uint64_t s_hist[HIST_BUCKETS]; // commit µs by floor(log2), under s_st_mu
    // Committed unfinished jobs: written under s_st_mu by the store
    // thread (by open before it starts), which alone writes it and so
    // reads it without the lock.
    uint64_t s_unfinished;
    int64_t s_delta; // the running batch's uncommitted change of it: the store thread's
    // The cap on unfinished jobs (0: none). Relaxed: a set is ordered
    // before the ops queued after it by s_mu (enqueue, store_main), and
    // nothing else is read through it.
    _Atomic uint64_t s_max_unfinished;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

// sql_err maps a SQLite result code (extended codes are on) to a tr_err.
static tr_err
sql_err(sqlite3 *db, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return TR_OK;
    case SQLITE_FULL:
        return TR_ENOSPC;
    case SQLITE_IOERR:
        // SQLite reports most ENOSPC as SQLITE_FULL, but not every path.
        return db != NULL && sqlite3_system_errno(db) == ENOSPC ? TR_ENOSPC : TR_EIO;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return TR_EIO;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TR_EBUSY;
    case SQLITE_NOMEM:
        return TR_ENOMEM;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return TR_EPERM;
    case SQLITE_CANTOPEN:
        return db != NULL && sqlite3_system_errno(db) != 0
                   ? tr_err_from_errno(sqlite3_system_errno(db))
                   : TR_ENOENT;
    case SQLITE_CONSTRAINT:
        return rc == SQLITE_CONSTRAINT_FOREIGNKEY ? TR_ENOTFOUND : TR_EINVAL;
    case SQLITE_TOOBIG:
        return TR_ETOOBIG;
    default:
        return TR_ESYSTEM;
    }
}

// op_error reports whether rc is the op's own fault (its transaction can
// go on once the op is rolled back to its savepoint), as opposed to an
// error of the transaction or the file.
static bool
op_error(int rc)
{
    int p = rc & 0xff;
    return p == SQLITE_CONSTRAINT || p == SQLITE_TOOBIG || p == SQLITE_MISMATCH ||
           p == SQLITE_RANGE;
}

// run steps a statement that returns no row, resets it and returns the
// step's code.
static int
run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static void
done_reset(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

// pragma_int runs a PRAGMA that returns one integer.
static int
pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

// ---------------------------------------------------------------------------
// Open: checks that read, then the writes (WAL, migrations).

// open_fail fills err with what SQLite said about step `what`, and maps rc.
static tr_err
open_fail(sqlite3 *db, int rc, const char *path, const char *what, char *err, size_t errlen)
{
    tr_err e = sql_err(db, rc);
    if (e == TR_OK) {
        e = TR_ESYSTEM;
    }
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
        set_err(err, errlen, "%s: %s: database is locked by another connection (waited %d ms)",
                path, what, TRD_STORE_BUSY_MS);
    } else if ((rc & 0xff) == SQLITE_NOTADB) {
        set_err(err, errlen, "%s: not a SQLite database (%s)", path, sqlite3_errmsg(db));
    } else {
        set_err(err, errlen, "%s: %s: %s", path, what, db != NULL ? sqlite3_errmsg(db) : "");
    }
    return e;
}

// check_existing reads what is in the file (nothing is written): its
// schema version, that it is ours, and quick_check.
static tr_err
check_existing(sqlite3 *db, const char *path, int64_t *version, char *err, size_t errlen)
{
    int rc = pragma_int(db, "PRAGMA user_version", version);
    if (rc != SQLITE_OK) {
        return open_fail(db, rc, path, "reading the schema version", err, errlen);
    }
    if (*version > TRD_STORE_SCHEMA) {
        set_err(err, errlen, "%s: database schema %lld is newer than this trouped's %d", path,
                (long long)*version, TRD_STORE_SCHEMA);
        return TR_ENOTSUP;
    }
    if (*version < 0) {
        set_err(err, errlen, "%s: database schema %lld is not one of trouped's", path,
                (long long)*version);
        return TR_EINVAL;
    }
    int64_t tables = 0;
    rc = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &tables);
    if (rc != SQLITE_OK) {
        return open_fail(db, rc, path, "reading the schema", err, errlen);
    }
    if (*version == 0 && tables > 0) {
        set_err(err, errlen,
                "%s: a SQLite database that is not trouped's (schema version 0 with %lld "
                "schema objects)",
                path, (long long)tables);
        return TR_EINVAL;
    }
    // O(size of the file): a few seconds for a database of some GiB, once
    // at start-up. Catches damage before the daemon builds on it.
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return open_fail(db, rc, path, "quick_check", err, errlen);
    }
    const char *res = (const char *)sqlite3_column_text(st, 0);
    if (res == NULL || strcmp(res, "ok") != 0) {
        set_err(err, errlen, "%s: the database is damaged (quick_check: %s)", path,
                res != NULL ? res : "?");
        sqlite3_finalize(st);
        return TR_EIO;
    }
    sqlite3_finalize(st);
    return TR_OK;
}

// configure switches the journal to WAL and sets the connection's
// pragmas: the first writes to the file.
static tr_err
configure(sqlite3 *db, trd_durability d, const char *path, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
    }
    bool wal = rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL &&
               strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        return open_fail(db, rc, path, "switching to WAL", err, errlen);
    }
    if (!wal) {
        set_err(err, errlen, "%s: the file system does not support SQLite's WAL mode", path);
        return TR_ENOTSUP;
    }
    rc = sqlite3_exec(db,
                      d == TRD_DURABLE_FULL
                          ? "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"
                          : "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return open_fail(db, rc, path, "setting pragmas", err, errlen);
    }
    return TR_OK;
}

// migrate brings the schema to TRD_STORE_SCHEMA, each version in a
// transaction of its own. The BEGIN IMMEDIATE also proves at start-up that
// the store can write (TR_EBUSY when another connection holds the lock).
static tr_err
migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    for (;;) {
        int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            return open_fail(db, rc, path, "taking the write lock", err, errlen);
        }
        int64_t v = 0;
        rc = pragma_int(db, "PRAGMA user_version", &v);
        if (rc != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return open_fail(db, rc, path, "reading the schema version", err, errlen);
        }
        if (v >= TRD_STORE_SCHEMA) {
            // Checked again under the lock: another process may have
            // migrated since check_existing.
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            if (v > TRD_STORE_SCHEMA) {
                set_err(err, errlen, "%s: database schema %lld is newer than this trouped's %d",
                        path, (long long)v, TRD_STORE_SCHEMA);
                return TR_ENOTSUP;
            }
            return TR_OK;
        }
        const struct migration *m = &migrations[v];
        char sql[160];
        rc = m->m_fn(db);
        if (rc == SQLITE_OK) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO schema_migrations(version, name, applied_ms) "
                     "VALUES (%lld, 'v%lld', %lld); PRAGMA user_version = %lld",
                     (long long)v + 1, (long long)v + 1, (long long)now_ms(), (long long)v + 1);
            rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK) {
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
            snprintf(sql, sizeof sql, "migrating to schema %lld (%s)", (long long)v + 1, m->m_name);
            tr_err e = open_fail(db, rc, path, sql, err, errlen);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return e;
        }
    }
}

static tr_err
prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n, const char *path,
            char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL);
        if (rc != SQLITE_OK) {
            return open_fail(db, rc, path, "preparing statements", err, errlen);
        }
    }
    return TR_OK;
}

static void *store_main(void *arg);

static void
store_free(trd_store *s)
{
    for (int i = 0; i < W_COUNT; i++) {
        sqlite3_finalize(s->s_w[i]);
    }
    for (int i = 0; i < R_COUNT; i++) {
        sqlite3_finalize(s->s_r[i]);
        sqlite3_finalize(s->s_p[i]);
    }
    // sqlite3_close (not _v2): every statement is finalized by now, so it
    // closes at once; the writer's close checkpoints and removes the WAL.
    sqlite3_close(s->s_rd);
    sqlite3_close(s->s_pt);
    sqlite3_close(s->s_db);
    pthread_mutex_destroy(&s->s_rd_mu);
    pthread_mutex_destroy(&s->s_pt_mu);
    pthread_mutex_destroy(&s->s_mu);
    pthread_cond_destroy(&s->s_cv);
    pthread_mutex_destroy(&s->s_st_mu);
    free(s);
}

tr_err
trd_store_open(const char *path, trd_durability d, trd_store **out, char *err, size_t errlen)
{
    set_err(err, errlen, "%s", "");
    *out = NULL;
    trd_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return TR_ENOMEM;
    }
    pthread_mutex_init(&s->s_rd_mu, NULL);
    pthread_mutex_init(&s->s_pt_mu, NULL);
    pthread_mutex_init(&s->s_mu, NULL);
    pthread_cond_init(&s->s_cv, NULL);
    pthread_mutex_init(&s->s_st_mu, NULL);
    s->s_tail = &s->s_head;
    tr_err e;
    int64_t version = 0, unfinished = 0;

    // NOMUTEX: each connection is used by one thread at a time (the store
    // thread; s_rd_mu's holder), so SQLite's own per-connection mutex is
    // not needed.
    int rc = sqlite3_open_v2(
        path, &s->s_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        e = open_fail(s->s_db, rc, path, "opening", err, errlen);
        goto fail;
    }
    sqlite3_extended_result_codes(s->s_db, 1);
    sqlite3_busy_timeout(s->s_db, TRD_STORE_BUSY_MS);
    if ((e = check_existing(s->s_db, path, &version, err, errlen)) != TR_OK) {
        goto fail;
    }
    // From here on the file is known to be ours (or new) and not newer.
    if ((e = configure(s->s_db, d, path, err, errlen)) != TR_OK) {
        goto fail;
    }
    if ((e = migrate(s->s_db, path, err, errlen)) != TR_OK) {
        goto fail;
    }
    if ((e = prepare_all(s->s_db, w_sql, s->s_w, W_COUNT, path, err, errlen)) != TR_OK) {
        goto fail;
    }
    // INDEXED BY: an error, not a scan of every job, if the index is gone.
    rc = pragma_int(s->s_db, "SELECT count(*) FROM jobs INDEXED BY jobs_unfinished WHERE state < 2",
                    &unfinished);
    if (rc != SQLITE_OK) {
        e = open_fail(s->s_db, rc, path, "counting unfinished jobs", err, errlen);
        goto fail;
    }
    s->s_unfinished = (uint64_t)unfinished;

    rc = sqlite3_open_v2(path, &s->s_rd, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        e = open_fail(s->s_rd, rc, path, "opening the read connection", err, errlen);
        goto fail;
    }
    sqlite3_extended_result_codes(s->s_rd, 1);
    sqlite3_busy_timeout(s->s_rd, TRD_STORE_BUSY_MS);
    if ((e = prepare_all(s->s_rd, r_sql, s->s_r, R_COUNT, path, err, errlen)) != TR_OK) {
        goto fail;
    }
    rc = sqlite3_open_v2(path, &s->s_pt, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        e = open_fail(s->s_pt, rc, path, "opening the point-read connection", err, errlen);
        goto fail;
    }
    sqlite3_extended_result_codes(s->s_pt, 1);
    sqlite3_busy_timeout(s->s_pt, TRD_STORE_BUSY_MS);
    if ((e = prepare_all(s->s_pt, r_sql, s->s_p, R_COUNT, path, err, errlen)) != TR_OK) {
        goto fail;
    }

    if ((rc = pthread_create(&s->s_thr, NULL, store_main, s)) != 0) {
        set_err(err, errlen, "%s: starting the store thread: %s", path, strerror(rc));
        e = tr_err_from_errno(rc);
        goto fail;
    }
    *out = s;
    return TR_OK;

fail:
    store_free(s);
    return e;
}

// ---------------------------------------------------------------------------
// The queue.

static void
enqueue(trd_store *s, op *o)
{
    pthread_mutex_lock(&s->s_mu);
    o->o_next = NULL;
    *s->s_tail = o;
    s->s_tail = &o->o_next;
    pthread_cond_signal(&s->s_cv);
    pthread_mutex_unlock(&s->s_mu);
}

// op_new allocates an op of kind with extra bytes after it, or answers
// done with TR_ENOMEM and returns NULL.
static op *
op_new(op_kind kind, size_t extra, trd_done_fn done, void *arg)
{
    op *o = malloc(sizeof *o + extra);
    if (o == NULL) {
        trd_submit_result r = {.r_detail = "out of memory"};
        done(arg, TR_ENOMEM, &r);
        return NULL;
    }
    memset(o, 0, sizeof *o);
    o->o_kind = kind;
    o->o_done = done;
    o->o_arg = arg;
    return o;
}

void
trd_store_submit(trd_store *s, const char *request_id, const void *batch, size_t len,
                 trd_done_fn done, void *arg)
{
    size_t rlen = strlen(request_id) + 1;
    op *o = op_new(OP_SUBMIT, rlen + len, done, arg);
    if (o == NULL) {
        return;
    }
    o->o_sub.rid = (char *)(o + 1);
    memcpy(o->o_sub.rid, request_id, rlen);
    o->o_sub.batch = (unsigned char *)o->o_sub.rid + rlen;
    if (len > 0) {
        memcpy(o->o_sub.batch, batch, len);
    }
    o->o_sub.len = len;
    enqueue(s, o);
}

void
trd_store_update(trd_store *s, const trd_job_update *u, trd_done_fn done, void *arg)
{
    const char *error = u->u_error != NULL ? u->u_error : "";
    size_t elen = strlen(error) + 1;
    op *o = op_new(OP_UPDATE, elen, done, arg);
    if (o == NULL) {
        return;
    }
    o->o_upd = *u;
    memcpy(o + 1, error, elen);
    o->o_upd.u_error = (const char *)(o + 1);
    enqueue(s, o);
}

void
trd_store_set_max_size(trd_store *s, uint64_t bytes, trd_done_fn done, void *arg)
{
    op *o = op_new(OP_MAX_SIZE, 0, done, arg);
    if (o == NULL) {
        return;
    }
    o->o_max_bytes = bytes;
    enqueue(s, o);
}

void
trd_store_set_max_unfinished(trd_store *s, uint64_t n)
{
    atomic_store_explicit(&s->s_max_unfinished, n, memory_order_relaxed);
}

void
trd_store_set_group(trd_store *s, const char *name, bool paused, uint32_t parallel,
                    bool set_parallel, trd_done_fn done, void *arg)
{
    size_t nlen = strlen(name) + 1;
    op *o = op_new(OP_GROUP, nlen, done, arg);
    if (o == NULL) {
        return;
    }
    memcpy(o + 1, name, nlen);
    o->o_grp.name = (const char *)(o + 1);
    o->o_grp.paused = paused;
    o->o_grp.parallel = parallel;
    o->o_grp.set_parallel = set_parallel;
    enqueue(s, o);
}

// ---------------------------------------------------------------------------
// The store thread: running ops.

// op_fail records an op's own error (its savepoint is rolled back).
static void op_fail(op *o, tr_err e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
op_fail(op *o, tr_err e, const char *fmt, ...)
{
    o->o_err = e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->o_detail, sizeof o->o_detail, fmt, ap);
    va_end(ap);
}

typedef struct named {
    const char *n_name;
    uint64_t n_id;
} named;

static int
named_cmp(const void *a, const void *b)
{
    return strcmp(((const named *)a)->n_name, ((const named *)b)->n_name);
}

// The submit's steps that can fail; each returns a SQLite code, and an
// op error (op_error) has been recorded with op_fail.

static int
insert_job(trd_store *s, op *o, const Troupe__V1__JobSpec *j, uint64_t *id)
{
    size_t n = troupe__v1__job_spec__get_packed_size(j);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        return SQLITE_NOMEM;
    }
    troupe__v1__job_spec__pack(j, buf);
    sqlite3_stmt *st = s->s_w[W_INSERT_JOB];
    sqlite3_bind_text(st, 1, o->o_sub.rid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->name != NULL ? j->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->group != NULL ? j->group : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, j->priority);
    sqlite3_bind_int64(st, 5, now_ms());
    sqlite3_bind_blob64(st, 6, buf, n, SQLITE_STATIC);
    int rc = run(st);
    free(buf);
    if (rc != SQLITE_DONE) {
        return rc;
    }
    *id = (uint64_t)sqlite3_last_insert_rowid(s->s_db);
    for (size_t k = 0; k < j->n_labels; k++) {
        st = s->s_w[W_INSERT_LABEL];
        sqlite3_bind_int64(st, 1, (sqlite3_int64)*id);
        sqlite3_bind_text(st, 2, j->labels[k]->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, j->labels[k]->value, -1, SQLITE_STATIC);
        if ((rc = run(st)) != SQLITE_DONE) {
            return rc;
        }
    }
    return SQLITE_DONE;
}

static int
insert_dep(trd_store *s, op *o, uint64_t job, uint64_t after)
{
    sqlite3_stmt *st = s->s_w[W_INSERT_DEP];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)job);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)after);
    int rc = run(st);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        op_fail(o, TR_ENOTFOUND, "after_ids: job %llu does not exist", (unsigned long long)after);
    }
    return rc;
}

// upsert_group stores a group's settings: paused (NULL: keep, false for
// a new row), parallel (NULL: keep, 0 for a new row).
static int
upsert_group(trd_store *s, const char *name, const bool *paused, const uint32_t *parallel)
{
    sqlite3_stmt *st = s->s_w[W_GROUP];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (paused != NULL) {
        sqlite3_bind_int(st, 2, *paused);
    }
    if (parallel != NULL) {
        sqlite3_bind_int64(st, 3, *parallel);
    }
    return run(st);
}

// submit_body inserts the batch's groups' limits (a group's paused flag
// is kept), the jobs of b, their labels and edges, and the request id,
// inside the op's savepoint.
static int
submit_body(trd_store *s, op *o, const Troupe__V1__SubmitBatch *b, named *names)
{
    int rc = SQLITE_DONE;
    uint64_t first = 0;
    for (size_t i = 0; i < b->n_groups; i++) {
        const Troupe__V1__GroupSpec *g = b->groups[i];
        rc = upsert_group(s, g->name != NULL ? g->name : "", NULL, &g->parallel);
        if (rc != SQLITE_DONE) {
            return rc;
        }
    }
    for (size_t i = 0; i < b->n_jobs; i++) {
        uint64_t id = 0;
        if ((rc = insert_job(s, o, b->jobs[i], &id)) != SQLITE_DONE) {
            return rc;
        }
        if (i == 0) {
            first = id;
        } else if (id != first + i) {
            // One writer inserting in one transaction: cannot happen
            // unless something else writes the file.
            op_fail(o, TR_EIO, "job ids are not consecutive (%llu after %llu)",
                    (unsigned long long)id, (unsigned long long)(first + i - 1));
            return SQLITE_CONSTRAINT;
        }
        names[i] = (named){b->jobs[i]->name != NULL ? b->jobs[i]->name : "", id};
    }
    qsort(names, b->n_jobs, sizeof *names, named_cmp);
    for (size_t i = 0; i < b->n_jobs; i++) {
        const Troupe__V1__JobSpec *j = b->jobs[i];
        for (size_t k = 0; k < j->n_after_ids; k++) {
            if ((rc = insert_dep(s, o, first + i, j->after_ids[k])) != SQLITE_DONE) {
                return rc;
            }
        }
        for (size_t k = 0; k < j->n_after_names; k++) {
            named key = {j->after_names[k], 0};
            const named *hit = key.n_name[0] != '\0'
                                   ? bsearch(&key, names, b->n_jobs, sizeof *names, named_cmp)
                                   : NULL;
            if (hit == NULL) {
                op_fail(o, TR_EINVAL, "job %zu: after_names: no job named \"%s\" in the batch", i,
                        key.n_name);
                return SQLITE_CONSTRAINT;
            }
            if ((rc = insert_dep(s, o, first + i, hit->n_id)) != SQLITE_DONE) {
                return rc;
            }
        }
    }
    sqlite3_stmt *st = s->s_w[W_INSERT_REQUEST];
    sqlite3_bind_text(st, 1, o->o_sub.rid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)first);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)b->n_jobs);
    sqlite3_bind_int64(st, 4, now_ms());
    if ((rc = run(st)) != SQLITE_DONE) {
        return rc;
    }
    o->o_res.r_first_id = first;
    o->o_res.r_count = (uint32_t)b->n_jobs;
    s->s_delta += (int64_t)b->n_jobs;
    return SQLITE_DONE;
}

static int
op_submit(trd_store *s, op *o)
{
    sqlite3_stmt *st = s->s_w[W_FIND_REQUEST];
    sqlite3_bind_text(st, 1, o->o_sub.rid, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        o->o_res.r_first_id = (uint64_t)sqlite3_column_int64(st, 0);
        o->o_res.r_count = (uint32_t)sqlite3_column_int64(st, 1);
        o->o_res.r_repeated = true;
        rc = SQLITE_DONE;
    }
    done_reset(st);
    if (rc != SQLITE_DONE || o->o_res.r_repeated) {
        return rc;
    }
    if (o->o_sub.rid[0] == '\0') {
        op_fail(o, TR_EINVAL, "the request id is empty");
        return SQLITE_DONE;
    }
    Troupe__V1__SubmitBatch *b =
        troupe__v1__submit_batch__unpack(NULL, o->o_sub.len, o->o_sub.batch);
    if (b == NULL) {
        op_fail(o, TR_EINVAL, "the batch is not a troupe.v1.SubmitBatch");
        return SQLITE_DONE;
    }
    if (b->job_count != b->n_jobs) {
        op_fail(o, TR_EINVAL, "the batch has %zu jobs, its job_count says %u", b->n_jobs,
                b->job_count);
        troupe__v1__submit_batch__free_unpacked(b, NULL);
        return SQLITE_DONE;
    }
    // After the repeated-id check: a re-sent Submit is answered even when
    // the queue is full.
    uint64_t cap = atomic_load_explicit(&s->s_max_unfinished, memory_order_relaxed);
    uint64_t now = (uint64_t)((int64_t)s->s_unfinished + s->s_delta);
    if (cap != 0 && b->n_jobs > 0 && now + b->n_jobs > cap) {
        op_fail(o, TR_ENOSPC,
                "too many unfinished jobs: %llu queued or running, this batch has %zu, the cap "
                "is %llu",
                (unsigned long long)now, b->n_jobs, (unsigned long long)cap);
        troupe__v1__submit_batch__free_unpacked(b, NULL);
        return SQLITE_DONE;
    }
    named *names = malloc((b->n_jobs > 0 ? b->n_jobs : 1) * sizeof *names);
    if (names == NULL) {
        troupe__v1__submit_batch__free_unpacked(b, NULL);
        return SQLITE_NOMEM;
    }
    rc = submit_body(s, o, b, names);
    free(names);
    troupe__v1__submit_batch__free_unpacked(b, NULL);
    return rc;
}

static int
op_update(trd_store *s, op *o)
{
    const trd_job_update *u = &o->o_upd;
    int64_t at = u->u_at_ms != 0 ? u->u_at_ms : now_ms();
    sqlite3_stmt *st;
    switch (u->u_kind) {
    case TRD_UPDATE_START:
        st = s->s_w[W_START];
        sqlite3_bind_int64(st, 2, u->u_attempt);
        sqlite3_bind_int(st, 3, u->u_leader_pid);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)u->u_leader_start);
        sqlite3_bind_int64(st, 5, at);
        break;
    case TRD_UPDATE_FINISH:
        if (!trd_job_state_final(u->u_state)) {
            op_fail(o, TR_EINVAL, "job %llu: %s is not a final state", (unsigned long long)u->u_id,
                    trd_job_state_name(u->u_state));
            return SQLITE_DONE;
        }
        st = s->s_w[W_FINISH];
        sqlite3_bind_int(st, 2, (int)u->u_state);
        sqlite3_bind_int64(st, 3, at);
        sqlite3_bind_int(st, 4, u->u_exit_code);
        sqlite3_bind_int(st, 5, u->u_signal);
        sqlite3_bind_text(st, 6, u->u_error, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)u->u_stdout_bytes);
        sqlite3_bind_int64(st, 8, (sqlite3_int64)u->u_stderr_bytes);
        sqlite3_bind_int(st, 9, u->u_truncated);
        break;
    case TRD_UPDATE_RETRY:
        st = s->s_w[W_RETRY];
        sqlite3_bind_int64(st, 2, u->u_attempt);
        sqlite3_bind_int64(st, 3, u->u_next_run_ms);
        sqlite3_bind_int(st, 4, u->u_exit_code);
        sqlite3_bind_int(st, 5, u->u_signal);
        sqlite3_bind_text(st, 6, u->u_error, -1, SQLITE_STATIC);
        break;
    default:
        op_fail(o, TR_EINVAL, "job %llu: unknown update kind %d", (unsigned long long)u->u_id,
                (int)u->u_kind);
        return SQLITE_DONE;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)u->u_id);
    int rc = run(st);
    if (rc == SQLITE_DONE && sqlite3_changes(s->s_db) == 1 && u->u_kind == TRD_UPDATE_FINISH) {
        s->s_delta--; // W_FINISH changes only an unfinished job
    }
    if (rc != SQLITE_DONE || sqlite3_changes(s->s_db) == 1) {
        return rc;
    }
    // Nothing changed: say why (no such job, or a state that forbids it).
    st = s->s_w[W_STATE];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)u->u_id);
    rc = sqlite3_step(st);
    int state = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    done_reset(st);
    if (rc == SQLITE_DONE) {
        op_fail(o, TR_ENOTFOUND, "job %llu does not exist", (unsigned long long)u->u_id);
    } else if (rc == SQLITE_ROW) {
        static const char *const verb[] = {"start", "finish", "retry"};
        op_fail(o, TR_EINVAL, "job %llu is %s: cannot %s it%s", (unsigned long long)u->u_id,
                trd_job_state_name((trd_job_state)state), verb[u->u_kind],
                trd_job_state_final((trd_job_state)state) ? " (its final record is stored)" : "");
        rc = SQLITE_DONE;
    }
    return rc;
}

static int
op_max_size(trd_store *s, op *o)
{
    int64_t page = 0, pages;
    int rc = pragma_int(s->s_db, "PRAGMA page_size", &page);
    if (rc != SQLITE_OK) {
        return rc;
    }
    // 0: the largest count SQLite 3.40 allows (its default).
    pages = o->o_max_bytes == 0 || page <= 0 ? 1073741823 : (int64_t)(o->o_max_bytes / page);
    if (pages < 1) {
        pages = 1;
    }
    char sql[64];
    int64_t got = 0;
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
    rc = pragma_int(s->s_db, sql, &got);
    return rc == SQLITE_OK ? SQLITE_DONE : rc;
}

static int
op_group(trd_store *s, op *o)
{
    return upsert_group(s, o->o_grp.name, &o->o_grp.paused,
                        o->o_grp.set_parallel ? &o->o_grp.parallel : NULL);
}

// run_op runs one op inside its savepoint. It returns SQLITE_DONE when the
// transaction can go on (the op succeeded, or failed on its own and was
// rolled back to its savepoint), else the code that dooms the batch.
static int
run_op(trd_store *s, op *o)
{
    o->o_err = TR_OK;
    o->o_detail[0] = '\0';
    int64_t delta = s->s_delta;
    int rc = run(s->s_w[W_SAVEPOINT]);
    if (rc != SQLITE_DONE) {
        return rc;
    }
    switch (o->o_kind) {
    case OP_SUBMIT:
        rc = op_submit(s, o);
        break;
    case OP_UPDATE:
        rc = op_update(s, o);
        break;
    case OP_MAX_SIZE:
        rc = op_max_size(s, o);
        break;
    case OP_GROUP:
        rc = op_group(s, o);
        break;
    }
    if (rc != SQLITE_DONE && !op_error(rc)) {
        return rc;
    }
    if (rc != SQLITE_DONE && o->o_err == TR_OK) {
        op_fail(o, sql_err(s->s_db, rc), "%s", sqlite3_errmsg(s->s_db));
    }
    if (o->o_err != TR_OK) {
        memset(&o->o_res, 0, sizeof o->o_res);
        // Each op adds its change last today; this keeps the count right
        // for a step that may one day fail after it.
        s->s_delta = delta;
        if ((rc = run(s->s_w[W_ROLLBACK_TO])) != SQLITE_DONE) {
            return rc;
        }
    }
    return run(s->s_w[W_RELEASE]);
}

static void
hist_add(trd_store *s, uint64_t us)
{
    unsigned b = 0;
    while (b + 1 < HIST_BUCKETS && (us >> (b + 1)) != 0) {
        b++;
    }
    s->s_hist[b]++;
}

// run_batch runs n ops in one transaction, then calls their callbacks and
// frees them.
static void
run_batch(trd_store *s, op *batch, uint64_t n)
{
    uint64_t t0 = mono_us();
    s->s_delta = 0;
    int rc = run(s->s_w[W_BEGIN]);
    for (op *o = batch; o != NULL && rc == SQLITE_DONE; o = o->o_next) {
        rc = run_op(s, o);
    }
    if (rc == SQLITE_DONE) {
        rc = run(s->s_w[W_COMMIT]);
    }
    uint64_t commit = 0;
    tr_err fatal = TR_OK;
    char why[200] = "";
    if (rc != SQLITE_DONE) {
        fatal = sql_err(s->s_db, rc);
        if (fatal == TR_OK) {
            fatal = TR_ESYSTEM;
        }
        snprintf(why, sizeof why, "the batch's transaction failed and was rolled back: %s",
                 sqlite3_errmsg(s->s_db));
        // SQLite rolls some errors back itself (SQLITE_FULL may have).
        if (!sqlite3_get_autocommit(s->s_db)) {
            run(s->s_w[W_ROLLBACK]);
        }
    }
    uint64_t us = mono_us() - t0;
    pthread_mutex_lock(&s->s_st_mu);
    if (fatal == TR_OK) {
        commit = ++s->s_commits;
        s->s_ops += n;
        if (n > s->s_ops_max) {
            s->s_ops_max = n;
        }
        hist_add(s, us);
        s->s_unfinished = (uint64_t)((int64_t)s->s_unfinished + s->s_delta);
    } else {
        s->s_failed++;
    }
    pthread_mutex_unlock(&s->s_st_mu);

    while (batch != NULL) {
        op *o = batch;
        batch = o->o_next;
        if (fatal != TR_OK) {
            memset(&o->o_res, 0, sizeof o->o_res);
            o->o_err = fatal;
            snprintf(o->o_detail, sizeof o->o_detail, "%s", why);
        }
        o->o_res.r_commit = commit;
        o->o_res.r_detail = o->o_detail;
        o->o_done(o->o_arg, o->o_err, &o->o_res);
        free(o);
    }
}

static void *
store_main(void *arg)
{
    trd_store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->s_mu);
        while (s->s_head == NULL && !s->s_closing) {
            pthread_cond_wait(&s->s_cv, &s->s_mu);
        }
        if (s->s_head == NULL) {
            pthread_mutex_unlock(&s->s_mu);
            return NULL;
        }
        op *batch = s->s_head, *last = batch;
        uint64_t n = 1;
        while (last->o_next != NULL && n < TRD_STORE_BATCH_MAX) {
            last = last->o_next;
            n++;
        }
        s->s_head = last->o_next;
        if (s->s_head == NULL) {
            s->s_tail = &s->s_head;
        }
        last->o_next = NULL;
        pthread_mutex_unlock(&s->s_mu);
        run_batch(s, batch, n);
    }
}

void
trd_store_close(trd_store *s)
{
    pthread_mutex_lock(&s->s_mu);
    s->s_closing = true;
    pthread_cond_signal(&s->s_cv);
    pthread_mutex_unlock(&s->s_mu);
    pthread_join(s->s_thr, NULL);
    store_free(s);
}

// ---------------------------------------------------------------------------
// Reads.

static const char *
col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t != NULL ? t : "";
}

// row_rec points r at the current row of st (valid until its next step).
static void
row_rec(sqlite3_stmt *st, trd_job_rec *r)
{
    memset(r, 0, sizeof *r);
    r->j_id = (uint64_t)sqlite3_column_int64(st, 0);
    r->j_request_id = col_text(st, 1);
    r->j_name = col_text(st, 2);
    r->j_group = col_text(st, 3);
    r->j_priority = sqlite3_column_int(st, 4);
    r->j_state = (trd_job_state)sqlite3_column_int(st, 5);
    r->j_attempt = (uint32_t)sqlite3_column_int64(st, 6);
    r->j_created_ms = sqlite3_column_int64(st, 7);
    r->j_started_ms = sqlite3_column_int64(st, 8);
    r->j_ended_ms = sqlite3_column_int64(st, 9);
    r->j_next_run_ms = sqlite3_column_int64(st, 10);
    r->j_exit_code = sqlite3_column_int(st, 11);
    r->j_signal = sqlite3_column_int(st, 12);
    r->j_error = col_text(st, 13);
    r->j_leader_pid = sqlite3_column_int(st, 14);
    r->j_leader_start = (uint64_t)sqlite3_column_int64(st, 15);
    r->j_stdout_bytes = (uint64_t)sqlite3_column_int64(st, 16);
    r->j_stderr_bytes = (uint64_t)sqlite3_column_int64(st, 17);
    r->j_truncated = sqlite3_column_int(st, 18) != 0;
    r->j_spec = sqlite3_column_blob(st, 19);
    r->j_spec_len = (size_t)sqlite3_column_bytes(st, 19);
}

// rec_copy makes *r own its strings and spec (one block, j_buf).
static tr_err
rec_copy(trd_job_rec *r)
{
    const char **strs[] = {&r->j_request_id, &r->j_name, &r->j_group, &r->j_error};
    size_t total = r->j_spec_len;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        total += strlen(*strs[i]) + 1;
    }
    char *buf = malloc(total > 0 ? total : 1);
    if (buf == NULL) {
        return TR_ENOMEM;
    }
    char *p = buf;
    if (r->j_spec_len > 0) {
        memcpy(p, r->j_spec, r->j_spec_len);
    }
    r->j_spec = p;
    p += r->j_spec_len;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        size_t n = strlen(*strs[i]) + 1;
        memcpy(p, *strs[i], n);
        *strs[i] = p;
        p += n;
    }
    r->j_buf = buf;
    r->j_buf_len = total;
    return TR_OK;
}

tr_err
trd_store_get(trd_store *s, uint64_t id, trd_job_rec *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->s_pt_mu);
    sqlite3_stmt *st = s->s_p[R_GET];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    int rc = sqlite3_step(st);
    tr_err e;
    if (rc == SQLITE_ROW) {
        row_rec(st, out);
        e = rec_copy(out);
    } else {
        e = rc == SQLITE_DONE ? TR_ENOTFOUND : sql_err(s->s_pt, rc);
    }
    done_reset(st);
    pthread_mutex_unlock(&s->s_pt_mu);
    if (e != TR_OK) {
        memset(out, 0, sizeof *out);
    }
    return e;
}

void
trd_job_rec_fini(trd_job_rec *r)
{
    free(r->j_buf);
    memset(r, 0, sizeof *r);
}

// each_row calls each for up to limit rows of st (UINT64_MAX: all), and
// sets *more when a row beyond the limit exists. Under s_rd_mu.
static tr_err
each_row(trd_store *s, sqlite3_stmt *st, uint64_t limit,
         void (*each)(void *arg, const trd_job_rec *r), void *arg, uint64_t *last, bool *more)
{
    uint64_t n = 0;
    int rc;
    *more = false;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            *more = true;
            break;
        }
        trd_job_rec r;
        row_rec(st, &r);
        *last = r.j_id;
        each(arg, &r);
        n++;
    }
    tr_err e = rc == SQLITE_ROW || rc == SQLITE_DONE ? TR_OK : sql_err(s->s_rd, rc);
    done_reset(st);
    return e;
}

tr_err
trd_store_list(trd_store *s, const trd_list_query *q, void (*each)(void *arg, const trd_job_rec *r),
               void *arg, uint64_t *next_cursor)
{
    *next_cursor = 0;
    uint32_t all = (1u << TRD_JOB_STATE_COUNT) - 1;
    uint32_t states = q->q_states != 0 ? q->q_states & all : all;
    uint32_t limit =
        q->q_limit != 0 && q->q_limit <= TRD_STORE_LIST_MAX ? q->q_limit : TRD_STORE_LIST_MAX;
    bool label = q->q_label_key != NULL;
    const char *prefix =
        q->q_name_prefix != NULL && q->q_name_prefix[0] != '\0' ? q->q_name_prefix : NULL;
    int which = label                 ? R_LIST_LABEL
                : q->q_group != NULL  ? R_LIST_GROUP
                : (states & ~3u) == 0 ? R_LIST_UNFINISHED
                                      : R_LIST_ALL;
    pthread_mutex_lock(&s->s_rd_mu);
    sqlite3_stmt *st = s->s_r[which];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)q->q_after_id);
    sqlite3_bind_int64(st, 2, states);
    if (q->q_group != NULL) {
        sqlite3_bind_text(st, 3, q->q_group, -1, SQLITE_STATIC);
    }
    if (prefix != NULL) {
        sqlite3_bind_text(st, 4, prefix, -1, SQLITE_STATIC);
    }
    if (label) {
        sqlite3_bind_text(st, 5, q->q_label_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, q->q_label_value != NULL ? q->q_label_value : "", -1,
                          SQLITE_STATIC);
    }
    // One row more than the page: whether there is a next page is known
    // now, so the last page never hands out a cursor to an empty one.
    sqlite3_bind_int64(st, 7, (sqlite3_int64)limit + 1);
    uint64_t last = 0;
    bool more = false;
    tr_err e = each_row(s, st, limit, each, arg, &last, &more);
    pthread_mutex_unlock(&s->s_rd_mu);
    if (e == TR_OK && more) {
        *next_cursor = last;
    }
    return e;
}

tr_err
trd_store_load_unfinished(trd_store *s, void (*each)(void *arg, const trd_job_rec *r), void *arg)
{
    uint64_t last = 0;
    bool more = false;
    pthread_mutex_lock(&s->s_rd_mu);
    tr_err e = each_row(s, s->s_r[R_UNFINISHED], UINT64_MAX, each, arg, &last, &more);
    pthread_mutex_unlock(&s->s_rd_mu);
    return e;
}

tr_err
trd_store_groups(trd_store *s,
                 void (*each)(void *arg, const char *name, bool paused, uint32_t parallel),
                 void *arg)
{
    pthread_mutex_lock(&s->s_rd_mu);
    sqlite3_stmt *st = s->s_r[R_GROUPS];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        each(arg, col_text(st, 0), sqlite3_column_int(st, 1) != 0,
             (uint32_t)sqlite3_column_int64(st, 2));
    }
    tr_err e = rc == SQLITE_DONE ? TR_OK : sql_err(s->s_rd, rc);
    done_reset(st);
    pthread_mutex_unlock(&s->s_rd_mu);
    return e;
}

// hist_quantile returns the upper bound (µs) of the bucket that holds the
// q-quantile of the commit times.
static uint64_t
hist_quantile(const uint64_t *hist, uint64_t total, double q)
{
    if (total == 0) {
        return 0;
    }
    uint64_t want = (uint64_t)(q * (double)total + 0.999999), seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= want) {
            return (uint64_t)2 << b;
        }
    }
    return (uint64_t)2 << (HIST_BUCKETS - 1);
}

void
trd_store_stats(trd_store *s, trd_store_counters *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->s_st_mu);
    out->st_commits = s->s_commits;
    out->st_ops = s->s_ops;
    out->st_failed = s->s_failed;
    out->st_ops_max = s->s_ops_max;
    out->st_unfinished = s->s_unfinished;
    out->st_ops_mean = s->s_commits != 0 ? (double)s->s_ops / (double)s->s_commits : 0;
    out->st_commit_p50_us = hist_quantile(s->s_hist, s->s_commits, 0.50);
    out->st_commit_p99_us = hist_quantile(s->s_hist, s->s_commits, 0.99);
    pthread_mutex_unlock(&s->s_st_mu);
}

bool
trd_job_state_final(trd_job_state st)
{
    return st >= TRD_JOB_SUCCEEDED && st < TRD_JOB_STATE_COUNT;
}

const char *
trd_job_state_name(trd_job_state st)
{
    static const char *const names[TRD_JOB_STATE_COUNT] = {
        "queued", "running", "succeeded", "failed", "cancelled", "timed_out", "skipped",
    };
    return (unsigned)st < TRD_JOB_STATE_COUNT ? names[st] : "unknown";
}
