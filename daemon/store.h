// store.h: trouped's durable job store: the job table in SQLite (WAL), one
// writer thread that group-commits every queued change, and a read
// connection for any thread. Internal to the daemon (prefix trd_).
//
// The promises the daemon builds on:
// - A write's done callback runs only after the COMMIT that holds it has
//   returned (with synchronous=FULL, after its fdatasync), so a reply sent
//   from the callback never acknowledges what a crash could take back.
// - One Submit per request id: a request id already stored is answered with
//   the ids of the first Submit (repeated = true) and inserts nothing, so a
//   Submit committed just before a crash and re-sent after it is one job.
// - One final record per job: a second final state for a job is refused.
// - An exact count of unfinished (queued or running) jobs, moved only by
//   what commits, and an optional cap on it that a Submit cannot pass.
// - A corrupt, locked, foreign or newer-schema database is an error at open,
//   never a reset: nothing in the file is written before it has been read
//   and found to be ours and not newer than this build.
#ifndef TRD_STORE_H
#define TRD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/err.h>

// The schema version this build writes (PRAGMA user_version).
#define TRD_STORE_SCHEMA 2
// How long a start-up or a write waits for a lock another connection holds
// before it gives up with TR_EBUSY (sqlite3_busy_timeout).
#define TRD_STORE_BUSY_MS 2000
// The most rows one trd_store_list call returns.
#define TRD_STORE_LIST_MAX 1000
// The most operations one transaction takes: bounds the time a commit
// holds back the callbacks of the first operation of a long queue.
#define TRD_STORE_BATCH_MAX 4096

typedef struct trd_store trd_store;

typedef enum trd_durability {
    // synchronous=FULL: a committed change survives a power loss (one
    // fdatasync of the WAL per group commit).
    TRD_DURABLE_FULL,
    // synchronous=NORMAL (--durability=process): survives a crash of the
    // process, not of the machine (the WAL is synced at checkpoints only).
    TRD_DURABLE_PROCESS,
} trd_durability;

// A job's state. The numbers are stored in the database: append only.
// QUEUED and RUNNING are unfinished; the others are final.
typedef enum trd_job_state {
    TRD_JOB_QUEUED = 0, // waiting to run (its deps, its group, a retry's time)
    TRD_JOB_RUNNING = 1,
    TRD_JOB_SUCCEEDED = 2,
    TRD_JOB_FAILED = 3,
    TRD_JOB_CANCELLED = 4,
    TRD_JOB_TIMED_OUT = 5,
    TRD_JOB_SKIPPED = 6,
} trd_job_state;
#define TRD_JOB_STATE_COUNT 7

// trd_job_state_final says whether st is a final state.
bool trd_job_state_final(trd_job_state st);

// trd_job_state_name returns "queued", "running", … (static text).
const char *trd_job_state_name(trd_job_state st);

// What a write's done callback gets. Valid for the call only.
typedef struct trd_submit_result {
    uint64_t r_first_id;  // a Submit: the first job's id (0: no jobs)
    uint32_t r_count;     // a Submit: its jobs have ids first_id .. first_id+count-1
    bool r_repeated;      // a Submit: the request id was stored already; these are its ids
    uint64_t r_commit;    // the number of the commit that held it (trd_store_stats' commits)
    const char *r_detail; // err != TR_OK: what was wrong (never NULL; "" when OK)
} trd_submit_result;

// trd_done_fn is called once per queued write, on the store thread, after
// the COMMIT of its batch returned (or after the batch was rolled back:
// err then says why). It must not block, and must not call
// trd_store_close; it may queue more writes (they go in a later batch) and
// read (trd_store_get, trd_store_list).
typedef void (*trd_done_fn)(void *arg, tr_err err, const trd_submit_result *r);

// trd_store_open opens the database at path, creating it when it does not
// exist and applying the migrations it lacks, and starts the store thread.
// Errors, each with a text in err (errlen bytes, may be 0), none of which
// writes anything to the file:
// - TR_EIO: not a SQLite database, or PRAGMA quick_check fails;
// - TR_EBUSY: another connection holds a lock for longer than
//   TRD_STORE_BUSY_MS;
// - TR_ENOTSUP: "database schema 7 is newer than this trouped's 2";
// - TR_EINVAL: a SQLite database that is not trouped's (schema 0 with tables);
// - others (TR_ENOENT, TR_EPERM, …): the file cannot be opened.
// Blocks (file IO, at most a busy timeout). Any thread.
tr_err trd_store_open(const char *path, trd_durability d, trd_store **out, char *err,
                      size_t errlen);

// trd_store_close runs every write already queued (their callbacks run),
// commits, stops and joins the store thread, and frees s. Queue nothing
// once it has been called. Blocks. Not from a done callback.
void trd_store_close(trd_store *s);

// trd_store_submit queues a Submit: batch is a packed troupe.v1.SubmitBatch
// (len bytes) that the caller has validated; request_id is the client's
// (non-empty) id. It stores the parallel of each of the batch's groups
// (see trd_store_set_group), inserts one row per job in order (ids
// increasing and consecutive, never reused), their labels and dependency
// edges (after_ids must name stored jobs, after_names jobs of the batch),
// and the request id; or, when request_id is stored already, inserts and
// stores nothing and reports the first Submit's ids with r_repeated.
// Copies request_id and batch. done runs exactly once (TR_EINVAL: a batch
// that does not decode or names a job it lacks; TR_ENOTFOUND: an after_id
// that is not stored; TR_ENOSPC, TR_EIO, TR_EBUSY: the whole batch's
// transaction failed and was rolled back; TR_ENOSPC too, alone, for a
// batch that would take the unfinished jobs past the cap of
// trd_store_set_max_unfinished: r_detail is then "too many unfinished
// jobs: N queued or running, this batch has M, the cap is C"). A Submit
// that fails stores nothing of it. A repeated request id is answered
// whatever the cap. Never blocks. Any thread.
void trd_store_submit(trd_store *s, const char *request_id, const void *batch, size_t len,
                      trd_done_fn done, void *arg);

typedef enum trd_update_kind {
    // queued → running: u_attempt, u_leader_pid, u_leader_start, u_at_ms.
    TRD_UPDATE_START,
    // queued or running → a final state u_state: u_at_ms (the end), u_exit_code,
    // u_signal, u_error, u_stdout_bytes, u_stderr_bytes, u_truncated.
    TRD_UPDATE_FINISH,
    // running → queued for another attempt: u_attempt, u_next_run_ms, and the
    // failed attempt's u_exit_code, u_signal, u_error.
    TRD_UPDATE_RETRY,
} trd_update_kind;

typedef struct trd_job_update {
    uint64_t u_id;
    trd_update_kind u_kind;
    trd_job_state u_state; // FINISH: the final state
    uint32_t u_attempt;
    int64_t u_at_ms; // START: started; FINISH: ended; 0: now
    int32_t u_leader_pid;
    uint64_t u_leader_start; // /proc/PID/stat field 22 (clock ticks since boot)
    int32_t u_exit_code;
    int32_t u_signal;
    const char *u_error; // NULL: ""
    uint64_t u_stdout_bytes;
    uint64_t u_stderr_bytes;
    bool u_truncated;
    int64_t u_next_run_ms;
} trd_job_update;

// trd_store_update queues a state change of one job (copied, u_error
// included). done runs exactly once: TR_ENOTFOUND for no such job;
// TR_EINVAL for a change its state does not allow (above all a second
// final record: a final state is final), with r_detail saying which; the
// batch errors as for trd_store_submit. Never blocks. Any thread.
void trd_store_update(trd_store *s, const trd_job_update *u, trd_done_fn done, void *arg);

// trd_store_set_group queues a change of group name's stored settings
// (the groups table; a group without a row has the defaults, not paused
// and parallel 0, the daemon's default): paused is set, and parallel too
// when set_parallel (else a stored limit is kept, and a new row gets 0).
// A Submit's GroupSpecs set their groups' parallel the same way, in the
// Submit's transaction, keeping paused. Copies name (non-NULL; "" is the
// default group). done as for the others: after the COMMIT that holds the
// change, or with the batch's error (TR_ENOSPC, TR_EIO, TR_EBUSY). Never
// blocks. Any thread.
void trd_store_set_group(trd_store *s, const char *name, bool paused, uint32_t parallel,
                         bool set_parallel, trd_done_fn done, void *arg);

// trd_store_set_max_unfinished caps the unfinished (queued or running)
// jobs at n (0: no cap, the default): a Submit whose jobs would take the
// count past n inserts nothing and fails with TR_ENOSPC (see
// trd_store_submit); what is stored already is never touched, so a cap
// below the count refuses Submits until enough jobs finish. The count
// is exact (st_unfinished). Takes effect for the Submits queued after it
// returns (some queued before and not yet run may see it too). Not
// stored: the daemon sets it at each start. Never blocks. Any thread.
void trd_store_set_max_unfinished(trd_store *s, uint64_t n);

// trd_store_set_max_size queues a cap on the database's size (bytes,
// rounded down to pages; 0: SQLite's default, about 4 TiB): writes past
// it fail their batch with TR_ENOSPC, as a full disk does. For tests of
// the disk-full path, and for an operator's limit. done as for the others.
void trd_store_set_max_size(trd_store *s, uint64_t bytes, trd_done_fn done, void *arg);

// A job as stored. Pointers belong to the store: valid during an `each`
// call, or until trd_job_rec_fini for trd_store_get's record.
typedef struct trd_job_rec {
    uint64_t j_id;
    const char *j_request_id;
    const char *j_name;
    const char *j_group;
    int32_t j_priority;
    trd_job_state j_state;
    uint32_t j_attempt;
    int64_t j_created_ms; // ms since the epoch; 0: not yet
    int64_t j_started_ms;
    int64_t j_ended_ms;
    int64_t j_next_run_ms;
    int32_t j_exit_code;
    int32_t j_signal;
    const char *j_error;
    int32_t j_leader_pid;
    uint64_t j_leader_start;
    uint64_t j_stdout_bytes;
    uint64_t j_stderr_bytes;
    bool j_truncated;
    const void *j_spec; // the packed troupe.v1.JobSpec
    size_t j_spec_len;
    void *j_buf; // trd_store_get: the copy behind the pointers
    size_t j_buf_len;
} trd_job_rec;

// trd_store_get reads job id into *out (TR_ENOTFOUND: none); the caller
// frees it with trd_job_rec_fini. Sees every committed write. Blocks
// (file IO). Any thread, done callbacks included.
tr_err trd_store_get(trd_store *s, uint64_t id, trd_job_rec *out);

// trd_job_rec_fini frees what trd_store_get put in r.
void trd_job_rec_fini(trd_job_rec *r);

typedef struct trd_list_query {
    uint32_t q_states;       // a set of 1u << trd_job_state; 0: every state
    const char *q_group;     // NULL: any group ("" is the default group)
    const char *q_label_key; // with q_label_value: jobs with that label; NULL: any
    const char *q_label_value;
    const char *q_name_prefix; // NULL or "": any name
    uint64_t q_after_id;       // the cursor: jobs with a greater id
    uint32_t q_limit;          // 0 or more than TRD_STORE_LIST_MAX: TRD_STORE_LIST_MAX
} trd_list_query;

// trd_store_list calls each for the jobs that match q, in id order, at most
// q_limit of them; *next_cursor is then the q_after_id of the next page, or
// 0 when this page was the last. The reads of one call see one snapshot.
// each must not call trd_store_list or trd_store_get (the read connection
// is held). Blocks (file IO). Any thread.
tr_err trd_store_list(trd_store *s, const trd_list_query *q,
                      void (*each)(void *arg, const trd_job_rec *r), void *arg,
                      uint64_t *next_cursor);

// trd_store_load_unfinished calls each for every queued or running job, in
// id order, from one snapshot: the daemon's recovery at start. Blocks. Any
// thread.
tr_err trd_store_load_unfinished(trd_store *s, void (*each)(void *arg, const trd_job_rec *r),
                                 void *arg);

// trd_store_groups calls each for every stored group, in name order, from
// one snapshot: the daemon reads the limits and paused flags at start.
// name is valid during the call. each must not call the store's reads
// (the read connection is held). Blocks (file IO). Any thread.
tr_err trd_store_groups(trd_store *s,
                        void (*each)(void *arg, const char *name, bool paused, uint32_t parallel),
                        void *arg);

typedef struct trd_store_counters {
    uint64_t st_commits;       // transactions committed
    uint64_t st_ops;           // operations in them
    uint64_t st_failed;        // batches rolled back (disk full, IO error)
    uint64_t st_ops_max;       // the most operations in one commit
    uint64_t st_unfinished;    // jobs queued or running, as committed
    double st_ops_mean;        // ops / commits
    uint64_t st_commit_p50_us; // commit time (BEGIN to COMMIT returned), the
    uint64_t st_commit_p99_us; // upper bound of its power-of-two bucket
} trd_store_counters;

// trd_store_stats copies the writer's counters. Never blocks on IO. Any
// thread.
void trd_store_stats(trd_store *s, trd_store_counters *out);

#endif
