// Design notes.
//
// The job runner: one actor that owns every unfinished job in memory and
// decides what runs. Its inputs are messages only: JobsAdded from the
// store thread (a Submit committed), Committed (an update of ours
// committed), ProcessStarted/ProcessOutput/ProcessExit from process
// actors, Tick from timer tasks, PluginDone from plugin tasks' watchers,
// and the requests it answers (WaitIn, LogsIn, CancelIn, GroupIn,
// ShutdownIn) from the control actor, each with the slot it replies on.
// It writes the store with trd_store_update and never waits for it: the
// store applies one writer's updates in order, and the Committed that
// comes back is what makes a final state visible to waiters, Logs' eof
// and the final JobEvent (none may show a state a crash could take
// back).
//
// Scheduling (pump): every queued job whose dependencies have all
// succeeded, and whose retry time has come, is a candidate; candidates run
// by priority, then id, while their group has free slots and is not paused
// (a job takes spec.slots, at least 1 and at most the group's limit, so
// that a heavy job cannot wait forever). A dependency that ended otherwise
// fails or skips the job (on_dep_failure), which cascades in the same
// pump. A pump runs only after a message that may change the answer
// (r_dirty), but costs O(jobs in memory): fine for thousands, not for 10^5
// queued jobs (a ready queue per group and a dependants index are next).
//
// Cancel: a queued job is cancelled at once; a running one gets a
// ProcessKill (SIGTERM to its session, SIGKILL after its grace) and is
// cancelled when its leader exits; a cancelled job is not retried.
// Shutdown: nothing new starts; the runner casts its vote to stop once no
// job runs (a deadline or `immediate` abandons the running ones: killed,
// nothing recorded, so the next start retries or fails them).
//
// Plugin jobs (JobSpec.plugin: a kind plugin.h's loader registered): the
// runner starts the kind's task on the runtime (trd_plugin_spawn: the
// kind's init runs on this worker and must not block) next to a small
// watcher task that joins it, runs the kind's result encoder and sends the
// runner a PluginDone; the runner never waits on a join, and the plugin's
// task runs on the workers like any other. A cancel, or the job's timeout
// (a Tick), cancels the task (tr_task_cancel by its id: a stale id is
// harmless) and the PluginDone that follows ends the job as cancelled or
// timed out, whatever the task's outcome (as a process job's kill does).
// The encoded result is the job's stdout, appended as process output is
// (the cap applies); an encoder's error fails the job with its text.
//
// Output: ProcessOutput chunks are appended to state-dir/out/<id>.1 and .2
// as they come (every attempt after the one before, so an offset always
// names the same byte), up to the job's cap per attempt and stream (the
// process actor drains and drops the rest: truncated). Logs reads the
// files; a Logs with follow at the end waits in r_logws until the job
// writes to that stream, ends, or TRD_WAIT_MAX_MS passes. Each chunk and
// state change is a JobEvent with the job's next seq.
//
// Recovery (init, on main's thread before the socket opens): the
// unfinished jobs are loaded; what an earlier trouped left running is
// killed (orphans.h) and each job that was running is retried or failed.
//
// Placement (placement.h): an exec or shell job runs on a worker with
// room, which starts its process actor; today the one worker is trouped
// itself (the local worker: tr_proc_actor_start here, its cgroup below
// ours). A remote worker would start it elsewhere and nothing below would
// change: the process actor's messages and kills go by address. pump
// starts such a job only while a worker has room; job_release gives the
// room back.
//
// Where things run: posix_spawn runs on the worker that runs this actor
// (tr_proc_actor_start spawns on the calling thread, ~0.1 ms per job), and
// so do the store reads the runner makes (a batch's rows after JobsAdded,
// dependencies no longer in memory, WaitJobs replies), the appends to the
// output files and the reads of Logs: short blocking IO on a worker (the
// page cache, one SQLite read), still to move to the blocking pool
// (tr_spawn_blocking) when it shows in the benchmarks.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <troupe/proc_actor.h>
#include <troupe/time.h>
#include <troupe/v1/job.pb-c.h>
#include <troupe/v1/process.pb-c.h>

#include "cgroup.h"
#include "orphans.h"
#include "placement.h"
#include "plugin.h"
#include "trouped.h"
#include "trouped_int.pb-c.h"

extern char **environ;

enum {
    TICK_SLEEP = 1,
    TICK_RETRY = 2,
    TICK_WAIT = 3,
    TICK_LOGS = 4,
    TICK_DRAIN = 5,
    TICK_TIMEOUT = 6
};

typedef struct job {
    uint64_t j_id;
    char *j_name;       // "" when unnamed
    char *j_request_id; // its Submit's
    char *j_group;
    int32_t j_prio;
    uint32_t j_slots;
    trd_job_state j_state; // in memory: ahead of the store by the updates in flight
    bool j_running;        // holds its group's slots
    bool j_final_committed;
    uint32_t j_attempt;
    int64_t j_next_run_ms; // a retry's time (0: now)
    uint64_t j_gen;        // ticks of an older sleep or retry are ignored
    Troupe__V1__JobSpec *j_spec;
    uint32_t j_wait;  // dependencies still to succeed
    uint64_t *j_dnts; // the ids of the jobs in memory that wait for this one
    size_t j_ndnts, j_capdnts;
    size_t j_gidx;        // its group: r_groups[j_gidx]
    size_t j_hpos;        // its place in its group's ready heap; NOT_READY: none
    bool j_fin_queued;    // in r_fin: its dependants are still to hear of its end
    tr_actor_addr j_proc; // its process actor while it runs
    trd_worker *j_worker; // where it runs (placement.h), NULL: nowhere
    uint32_t j_wslots;    // the worker's slots it holds (trd_place's taken)
    tr_task_id j_task;    // its plugin task while it runs (id 0: none)
    bool j_timed_out;     // its plugin task was cancelled by its timeout
    bool j_cancel;        // cancelled while it ran: its exit is "cancelled"
    bool j_abandon;       // killed by a shutdown: its exit records nothing
    bool j_truncated;     // an attempt's output passed the cap
    uint64_t j_seq;       // its last JobEvent's seq
    uint64_t j_out[2];    // bytes in its stdout and stderr files
    int j_fd[2];          // those files, open while an attempt writes (-1: closed)
} job;

#define NOT_READY SIZE_MAX

typedef struct group {
    char *g_name;
    uint32_t g_limit;
    uint32_t g_used;
    bool g_paused; // no job of it starts
    // Its ready jobs (queued, dependencies met, retry time come): a binary
    // heap by priority (higher first), then id (lower first).
    job **g_heap;
    size_t g_nheap, g_capheap;
} group;

typedef struct waiter {
    uint64_t w_id;
    uint32_t w_slot;
    uint64_t *w_ids; // what it asked for, in order (the reply's)
    size_t w_n;
    uint64_t *w_left; // those whose final state is not committed yet
    size_t w_nleft;
} waiter;

// A Logs request with follow that found nothing new: answered when its
// job writes to the stream, ends, or the request's time passes.
typedef struct logw {
    uint64_t lw_id; // for its Tick
    uint32_t lw_slot;
    uint64_t lw_job;
    uint32_t lw_stream;
    uint64_t lw_offset;
    uint32_t lw_max;
} logw;

typedef struct runner {
    trd_daemon *r_d;
    // Every job in memory, by id: an open-addressing table (linear probing,
    // power-of-two size, at most 3/4 full).
    job **r_map;
    size_t r_n, r_cap;
    job **r_fin; // ended, their dependants not yet told (settle)
    size_t r_nfin, r_capfin;
    size_t r_nrunning; // jobs holding slots
    group *r_groups;
    size_t r_ngroups;
    waiter *r_waits;
    size_t r_nwaits;
    uint64_t r_next_wait;
    logw *r_logws;
    size_t r_nlogws;
    uint64_t *r_precancel; // cancelled before their JobsAdded came
    size_t r_nprecancel;
    job **r_run; // the jobs with a process actor (what job_of_proc searches)
    size_t r_nrun, r_caprun;
    trd_leader *r_recover; // at start: the leaders of the jobs found running
    size_t r_nrecover;
    char r_cgroup[4096];    // the parent of the jobs' cgroups ("": none; cgroup.h)
    trd_placement *r_place; // where exec and shell jobs run (placement.h)
    job **r_loaded;         // at start: the jobs loaded, in id order
    size_t r_nloaded, r_caploaded;
    bool r_dirty;       // something a pump may act on changed
    bool r_draining;    // a Shutdown: start nothing
    bool r_drain_voted; // and its vote is cast
} runner;

static void *
xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n != 0 ? n : 1, sz);
    if (p == NULL) {
        abort();
    }
    return p;
}

static char *
xstrdup(const char *s)
{
    char *p = strdup(s != NULL ? s : "");
    if (p == NULL) {
        abort();
    }
    return p;
}

// ---------------------------------------------------------------------------
// Timers: a task that sleeps, then sends the runner a Tick.

typedef struct ticker {
    tr_timer t_timer;
    uint64_t t_ns;
    tr_actor_addr t_to;
    uint32_t t_kind;
    uint64_t t_id, t_gen;
} ticker;

static tr_poll
ticker_poll(void *state, tr_cx *cx)
{
    ticker *t = state;
    if (tr_sleep(&t->t_timer, cx, t->t_ns) == TR_PENDING) {
        return TR_PENDING;
    }
    Troupe__Daemon__Tick *tk;
    tr_msg *m = tr_msg_new(&troupe__daemon__tick__descriptor, 0, (void **)&tk);
    tk->kind = t->t_kind;
    tk->id = t->t_id;
    tk->gen = t->t_gen;
    if (tr_actor_send(NULL, t->t_to, m) != TR_OK) {
        tr_msg_free(m);
    }
    return TR_READY;
}

static void
ticker_drop(void *state)
{
    tr_timer_abandon(&((ticker *)state)->t_timer);
}

static const tr_task_spec ticker_spec = {
    .name = "trouped.ticker",
    .poll = ticker_poll,
    .drop = ticker_drop,
    .size = sizeof(ticker),
};

static void
tick_after(tr_actor *self, uint64_t ms, uint32_t kind, uint64_t id, uint64_t gen)
{
    ticker t = {.t_ns = ms * 1000000u,
                .t_to = tr_actor_self(self),
                .t_kind = kind,
                .t_id = id,
                .t_gen = gen};
    tr_err rv = tr_spawn(tr_actor_rt(self), &ticker_spec, NULL, &t, NULL);
    if (rv != TR_OK) {
        trd_log("timer_failed", "id=%llu code=%s", (unsigned long long)id, tr_err_name(rv));
    }
}

// ---------------------------------------------------------------------------
// Jobs in memory.

static size_t
map_slot(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static job *
job_find(runner *r, uint64_t id)
{
    if (r->r_cap == 0) {
        return NULL;
    }
    for (size_t i = map_slot(id, r->r_cap);; i = (i + 1) & (r->r_cap - 1)) {
        job *j = r->r_map[i];
        if (j == NULL || j->j_id == id) {
            return j;
        }
    }
}

static void
map_put(job **map, size_t cap, job *j)
{
    size_t i = map_slot(j->j_id, cap);
    while (map[i] != NULL) {
        i = (i + 1) & (cap - 1);
    }
    map[i] = j;
}

static void out_close(job *j);

static void
job_free(job *j)
{
    out_close(j);
    free(j->j_name);
    free(j->j_request_id);
    free(j->j_group);
    free(j->j_dnts);
    if (j->j_spec != NULL) {
        troupe__v1__job_spec__free_unpacked(j->j_spec, NULL);
    }
    free(j);
}

static void
job_insert(runner *r, job *j)
{
    if ((r->r_n + 1) * 4 > r->r_cap * 3) {
        size_t cap = r->r_cap != 0 ? r->r_cap * 2 : 256;
        job **map = xcalloc(cap, sizeof *map);
        for (size_t i = 0; i < r->r_cap; i++) {
            if (r->r_map[i] != NULL) {
                map_put(map, cap, r->r_map[i]);
            }
        }
        free(r->r_map);
        r->r_map = map;
        r->r_cap = cap;
    }
    map_put(r->r_map, r->r_cap, j);
    r->r_n++;
}

// job_remove takes j out of the table (backward-shift deletion keeps every
// probe chain whole) and frees it.
static void
job_remove(runner *r, job *j)
{
    size_t mask = r->r_cap - 1, i = map_slot(j->j_id, r->r_cap);
    while (r->r_map[i] != j) {
        i = (i + 1) & mask;
    }
    for (size_t k = (i + 1) & mask; r->r_map[k] != NULL; k = (k + 1) & mask) {
        size_t home = map_slot(r->r_map[k]->j_id, r->r_cap);
        // Move k into the hole at i unless its home lies in (i, k].
        if (((k - home) & mask) >= ((k - i) & mask)) {
            r->r_map[i] = r->r_map[k];
            i = k;
        }
    }
    r->r_map[i] = NULL;
    r->r_n--;
    job_free(j);
}

// group_idx returns the index of the group named name, made with the
// default limit when new.
static size_t
group_idx(runner *r, const char *name)
{
    for (size_t i = 0; i < r->r_ngroups; i++) {
        if (strcmp(r->r_groups[i].g_name, name) == 0) {
            return i;
        }
    }
    r->r_groups = realloc(r->r_groups, (r->r_ngroups + 1) * sizeof *r->r_groups);
    if (r->r_groups == NULL) {
        abort();
    }
    group *g = &r->r_groups[r->r_ngroups];
    memset(g, 0, sizeof *g);
    g->g_name = xstrdup(name);
    g->g_limit = r->r_d->d_cores;
    return r->r_ngroups++;
}

static group *
group_get(runner *r, const char *name)
{
    size_t i = group_idx(r, name); // first: it may move r_groups
    return &r->r_groups[i];
}

// ---------------------------------------------------------------------------
// Ready heaps.

static bool
heap_before(const job *a, const job *b)
{
    return a->j_prio != b->j_prio ? a->j_prio > b->j_prio : a->j_id < b->j_id;
}

static void
heap_set(group *g, size_t i, job *j)
{
    g->g_heap[i] = j;
    j->j_hpos = i;
}

static void
heap_up(group *g, size_t i)
{
    job *j = g->g_heap[i];
    while (i > 0 && heap_before(j, g->g_heap[(i - 1) / 2])) {
        heap_set(g, i, g->g_heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(g, i, j);
}

static void
heap_down(group *g, size_t i)
{
    job *j = g->g_heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= g->g_nheap) {
            break;
        }
        if (c + 1 < g->g_nheap && heap_before(g->g_heap[c + 1], g->g_heap[c])) {
            c++;
        }
        if (!heap_before(g->g_heap[c], j)) {
            break;
        }
        heap_set(g, i, g->g_heap[c]);
        i = c;
    }
    heap_set(g, i, j);
}

// ready_add puts a queued job whose dependencies are met and whose time
// has come into its group's heap.
static void
ready_add(runner *r, job *j)
{
    if (j->j_hpos != NOT_READY) {
        return;
    }
    group *g = &r->r_groups[j->j_gidx];
    if (g->g_nheap == g->g_capheap) {
        g->g_capheap = g->g_capheap != 0 ? g->g_capheap * 2 : 64;
        g->g_heap = realloc(g->g_heap, g->g_capheap * sizeof *g->g_heap);
        if (g->g_heap == NULL) {
            abort();
        }
    }
    heap_set(g, g->g_nheap++, j);
    heap_up(g, g->g_nheap - 1);
}

static void
ready_remove(runner *r, job *j)
{
    if (j->j_hpos == NOT_READY) {
        return;
    }
    group *g = &r->r_groups[j->j_gidx];
    size_t i = j->j_hpos;
    j->j_hpos = NOT_READY;
    job *last = g->g_heap[--g->g_nheap];
    if (i < g->g_nheap) {
        heap_set(g, i, last);
        heap_up(g, i);
        heap_down(g, last->j_hpos);
    }
}

// make_ready readies j when nothing holds it back any more (its
// dependencies, its retry time: a later Tick readies it then).
static void
make_ready(runner *r, job *j)
{
    if (j->j_state == TRD_JOB_QUEUED && j->j_spec != NULL && j->j_wait == 0 &&
        j->j_next_run_ms <= trd_now_ms()) {
        ready_add(r, j);
        r->r_dirty = true;
    }
}

// find_in_batch finds the job of j's batch named name: a batch's ids are
// consecutive and share its request id, so the walk goes from j's id both
// ways while they do; a job no longer in memory (final before a restart)
// is read from the store.
static uint64_t
find_in_batch(runner *r, const job *j, const char *name)
{
    for (int dir = -1; dir <= 1; dir += 2) {
        for (uint64_t id = j->j_id + (uint64_t)(int64_t)dir; id != 0;
             id += (uint64_t)(int64_t)dir) {
            const job *o = job_find(r, id);
            bool same, hit;
            if (o != NULL) {
                same = strcmp(o->j_request_id, j->j_request_id) == 0;
                hit = same && strcmp(o->j_name, name) == 0;
            } else {
                trd_job_rec rec;
                if (trd_store_get(r->r_d->d_store, id, &rec) != TR_OK) {
                    break;
                }
                same = strcmp(rec.j_request_id, j->j_request_id) == 0;
                hit = same && strcmp(rec.j_name, name) == 0;
                trd_job_rec_fini(&rec);
            }
            if (hit) {
                return id;
            }
            if (!same) {
                break;
            }
        }
    }
    return 0;
}

static void job_finish(runner *r, job *j, trd_job_state st, const char *error, int32_t code,
                       int32_t sig, const Troupe__V1__ProcessExit *px);

// job_new makes a queued job in memory from what a Submit stored (spec:
// the packed JobSpec; a spec that does not decode fails the job at once).
static job *
job_new(runner *r, uint64_t id, const char *name, const char *request_id, const char *grp,
        int32_t prio, const void *spec, size_t spec_len)
{
    job *j = xcalloc(1, sizeof *j);
    j->j_id = id;
    j->j_name = xstrdup(name);
    j->j_request_id = xstrdup(request_id);
    j->j_group = xstrdup(grp);
    j->j_gidx = group_idx(r, j->j_group);
    j->j_prio = prio;
    j->j_state = TRD_JOB_QUEUED;
    j->j_hpos = NOT_READY;
    j->j_fd[0] = j->j_fd[1] = -1;
    j->j_spec = troupe__v1__job_spec__unpack(NULL, spec_len, spec);
    job_insert(r, j);
    if (j->j_spec == NULL) {
        job_finish(r, j, TRD_JOB_FAILED, "stored job spec does not decode", 0, 0, NULL);
        return j;
    }
    j->j_slots = j->j_spec->slots != 0 ? j->j_spec->slots : 1;
    return j;
}

// job_add takes a stored record into memory.
static job *
job_add(runner *r, const trd_job_rec *rec)
{
    job *j = job_new(r, rec->j_id, rec->j_name, rec->j_request_id, rec->j_group, rec->j_priority,
                     rec->j_spec, rec->j_spec_len);
    if (!trd_job_state_final(j->j_state)) {
        j->j_state = rec->j_state;
    }
    j->j_attempt = rec->j_attempt;
    j->j_next_run_ms = rec->j_next_run_ms;
    return j;
}

static void
dnt_add(job *dep, const job *j)
{
    if (dep->j_ndnts == dep->j_capdnts) {
        dep->j_capdnts = dep->j_capdnts != 0 ? dep->j_capdnts * 2 : 4;
        dep->j_dnts = realloc(dep->j_dnts, dep->j_capdnts * sizeof *dep->j_dnts);
        if (dep->j_dnts == NULL) {
            abort();
        }
    }
    dep->j_dnts[dep->j_ndnts++] = j->j_id;
}

// dep_failed ends j because its dependency id ended in st, per j's policy.
static void
dep_failed(runner *r, job *j, uint64_t id, trd_job_state st)
{
    char why[128];
    snprintf(why, sizeof why, "dependency %llu %s", (unsigned long long)id, trd_job_state_name(st));
    bool skip = j->j_spec->on_dep_failure == TROUPE__V1__DEP_FAILURE__DEP_FAILURE_SKIP;
    job_finish(r, j, skip ? TRD_JOB_SKIPPED : TRD_JOB_FAILED, why, 0, 0, NULL);
}

// link_dep makes j wait for job id: a job in memory that has not ended
// tells j when it does; one that has ended (in memory or in the store)
// counts now.
static void
link_dep(runner *r, job *j, uint64_t id)
{
    if (trd_job_state_final(j->j_state)) {
        return;
    }
    job *d = job_find(r, id);
    trd_job_state st;
    if (d != NULL && !trd_job_state_final(d->j_state)) {
        j->j_wait++;
        dnt_add(d, j);
        return;
    }
    if (d != NULL) {
        st = d->j_state;
    } else {
        trd_job_rec rec;
        if (trd_store_get(r->r_d->d_store, id, &rec) != TR_OK) {
            st = TRD_JOB_FAILED;
        } else {
            st = rec.j_state;
            trd_job_rec_fini(&rec);
        }
        if (!trd_job_state_final(st)) {
            // Stored, unfinished, not in memory: cannot be (a batch's
            // jobs come in before any later batch's); fail safe.
            st = TRD_JOB_FAILED;
        }
    }
    if (st != TRD_JOB_SUCCEEDED) {
        dep_failed(r, j, id, st);
    }
}

// job_link resolves j's dependencies (once every job of its batch is in
// memory) and readies it when none holds it back.
static void
job_link(runner *r, job *j)
{
    const Troupe__V1__JobSpec *s = j->j_spec;
    if (s == NULL || trd_job_state_final(j->j_state)) {
        return;
    }
    for (size_t i = 0; i < s->n_after_ids; i++) {
        link_dep(r, j, s->after_ids[i]);
    }
    for (size_t i = 0; i < s->n_after_names && !trd_job_state_final(j->j_state); i++) {
        uint64_t id = find_in_batch(r, j, s->after_names[i]);
        if (id == 0) {
            char why[300];
            snprintf(why, sizeof why, "dependency \"%s\" not found", s->after_names[i]);
            job_finish(r, j, TRD_JOB_FAILED, why, 0, 0, NULL);
            return;
        }
        link_dep(r, j, id);
    }
    make_ready(r, j);
}

// settle tells the dependants of the jobs that ended: one more dependency
// met, or theirs failed (which ends them, and so on down: a worklist, not
// recursion, so a long chain takes no stack).
static void
settle(runner *r)
{
    while (r->r_nfin > 0) {
        job *d = r->r_fin[--r->r_nfin];
        d->j_fin_queued = false;
        for (size_t i = 0; i < d->j_ndnts; i++) {
            job *j = job_find(r, d->j_dnts[i]);
            if (j == NULL || trd_job_state_final(j->j_state)) {
                continue;
            }
            if (d->j_state == TRD_JOB_SUCCEEDED) {
                j->j_wait--;
                make_ready(r, j);
            } else {
                dep_failed(r, j, d->j_id, d->j_state);
            }
        }
        free(d->j_dnts);
        d->j_dnts = NULL;
        d->j_ndnts = d->j_capdnts = 0;
    }
}

// ---------------------------------------------------------------------------
// Store writes.

typedef struct upd_ctx {
    tr_actor_addr uc_runner;
    uint64_t uc_id;
    uint32_t uc_kind;
    uint32_t uc_state;
} upd_ctx;

// update_done runs on the store thread after the COMMIT: it tells the
// runner (waiters see a final state only once it is durable).
static void
update_done(void *arg, tr_err err, const trd_submit_result *res)
{
    upd_ctx *uc = arg;
    if (err == TR_OK && uc->uc_kind != TRD_UPDATE_FINISH) {
        // The runner acts only on a job's final commit, and on failures:
        // no message (and no worker woken) for a start or a retry that
        // went in.
        free(uc);
        return;
    }
    Troupe__Daemon__Committed *c;
    tr_msg *m = tr_msg_new(&troupe__daemon__committed__descriptor, 64, (void **)&c);
    c->id = uc->uc_id;
    c->kind = uc->uc_kind;
    c->err = (int32_t)err;
    c->detail = tr_msg_strdup(m, res->r_detail);
    c->state = uc->uc_state;
    if (tr_actor_send(NULL, uc->uc_runner, m) != TR_OK) {
        tr_msg_free(m);
    }
    free(uc);
}

static void
store_update(runner *r, tr_actor_addr self, trd_job_update *u)
{
    upd_ctx *uc = xcalloc(1, sizeof *uc);
    uc->uc_runner = self;
    uc->uc_id = u->u_id;
    uc->uc_kind = (uint32_t)u->u_kind;
    uc->uc_state = (uint32_t)u->u_state;
    trd_store_update(r->r_d->d_store, u, update_done, uc);
}

// The runner's own address, for the store callbacks (set in init).
static tr_actor_addr g_self;

static void
out_path(const runner *r, uint64_t id, uint32_t stream, char *path, size_t n)
{
    snprintf(path, n, "%s/%llu.%u", r->r_d->d_out_dir, (unsigned long long)id, stream);
}

// out_size returns the bytes in job id's output file of stream (0: none).
static uint64_t
out_size(const runner *r, uint64_t id, uint32_t stream)
{
    char path[4200];
    out_path(r, id, stream, path, sizeof path);
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

// append_output adds a chunk of j's output to its file. Every attempt's
// output goes to the same file, one after the other, so a Logs offset
// always means the same byte.
static void
append_output(runner *r, job *j, uint32_t stream, const uint8_t *data, size_t len)
{
    char path[4200];
    out_path(r, j->j_id, stream, path, sizeof path);
    int fd = j->j_fd[stream - 1];
    if (fd < 0) { // the attempt's first chunk of it: open once, until job_release
        fd = j->j_fd[stream - 1] = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        trd_log("output_failed", "id=%llu path=\"%s\" errno=%d", (unsigned long long)j->j_id, path,
                errno);
        return;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            // A full disk: the job goes on; its log lacks the rest.
            trd_log("output_failed", "id=%llu path=\"%s\" errno=%d", (unsigned long long)j->j_id,
                    path, errno);
            break;
        }
        off += (size_t)n;
    }
    j->j_out[stream - 1] += off;
}

// out_close closes j's output files (an attempt has ended).
static void
out_close(job *j)
{
    for (int i = 0; i < 2; i++) {
        if (j->j_fd[i] >= 0) {
            close(j->j_fd[i]);
            j->j_fd[i] = -1;
        }
    }
}

// job_event publishes j's state (a change).
static void
job_event(runner *r, job *j)
{
    j->j_seq++;
    trd_publish(r->r_d, j->j_id, j->j_seq, j->j_state, 0, 0, NULL, 0);
}

// ---------------------------------------------------------------------------
// Logs.

// A Logs reply, read from the job's file on the blocking pool.
typedef struct logs_out {
    trd_daemon *lo_d;
    char lo_path[4200];
    uint32_t lo_slot, lo_max;
    uint64_t lo_offset;
    bool lo_final, lo_truncated, lo_timed_out;
} logs_out;

// log_reply_new makes a Logs reply whose LogChunk (*lc) starts at offset
// and says truncated; the caller sets its data and eof.
static tr_msg *
log_reply_new(uint64_t offset, bool truncated, bool timed_out, Troupe__V1__LogChunk **lc)
{
    Troupe__V1__ControlReply *rep;
    tr_msg *m = trd_reply_new(&rep);
    *lc = tr_msg_arena(m, sizeof **lc);
    troupe__v1__log_chunk__init(*lc);
    (*lc)->offset = offset;
    (*lc)->truncated = truncated;
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_LOG;
    rep->log = *lc;
    rep->timed_out = timed_out;
    return m;
}

static void
logs_out_run(void *arg)
{
    logs_out *lo = arg;
    Troupe__V1__LogChunk *lc;
    tr_msg *m = log_reply_new(lo->lo_offset, lo->lo_truncated, lo->lo_timed_out, &lc);
    uint64_t size = 0;
    int fd = open(lo->lo_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        size = (uint64_t)st.st_size;
    }
    size_t n = 0;
    if (fd >= 0 && lo->lo_offset < size) {
        size_t want =
            size - lo->lo_offset < lo->lo_max ? (size_t)(size - lo->lo_offset) : lo->lo_max;
        uint8_t *buf = tr_msg_arena(m, want);
        while (n < want) {
            ssize_t k = pread(fd, buf + n, want - n, (off_t)(lo->lo_offset + n));
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                break;
            }
            n += (size_t)k;
        }
        lc->data.data = buf;
        lc->data.len = n;
    }
    if (fd >= 0) {
        close(fd);
    }
    lc->eof = lo->lo_final && lo->lo_offset + n >= size;
    trd_reply(lo->lo_d, lo->lo_slot, m);
    free(lo);
}

// logs_reply answers a Logs request from job id's file: up to max bytes
// at offset; eof when the job is final and nothing is left. The read and
// the reply run on the blocking pool (the file is only appended to, so a
// read there sees at least what was written before).
static void
logs_reply(runner *r, uint32_t slot, uint64_t id, uint32_t stream, uint64_t offset, uint32_t max,
           bool final, bool truncated, bool timed_out)
{
    logs_out *lo = xcalloc(1, sizeof *lo);
    *lo = (logs_out){.lo_d = r->r_d,
                     .lo_slot = slot,
                     .lo_max = max,
                     .lo_offset = offset,
                     .lo_final = final,
                     .lo_truncated = truncated,
                     .lo_timed_out = timed_out};
    out_path(r, id, stream, lo->lo_path, sizeof lo->lo_path);
    trd_offload(r->r_d, logs_out_run, free, lo);
}

// logw_answer answers waiter i (and forgets it).
static void logw_answer(runner *r, size_t i, bool timed_out);

static void
on_logs(runner *r, tr_actor *self, const Troupe__Daemon__LogsIn *li)
{
    job *j = job_find(r, li->id);
    bool final = false, truncated = false;
    if (j != NULL) {
        truncated = j->j_truncated;
    } else {
        trd_job_rec rec;
        tr_err rv = trd_store_get(r->r_d->d_store, li->id, &rec);
        if (rv != TR_OK) {
            trd_reply_error(r->r_d, li->slot, rv, "logs: job %llu: %s", (unsigned long long)li->id,
                            rv == TR_ENOTFOUND ? "no such job" : tr_strerror(rv));
            return;
        }
        // Not in memory: final, or its JobsAdded is still on its way.
        final = trd_job_state_final(rec.j_state);
        truncated = rec.j_truncated;
        trd_job_rec_fini(&rec);
    }
    if (final || !li->follow || li->offset < out_size(r, li->id, li->stream)) {
        logs_reply(r, li->slot, li->id, li->stream, li->offset, li->max_bytes, final, truncated,
                   false);
        return;
    }
    r->r_logws = realloc(r->r_logws, (r->r_nlogws + 1) * sizeof *r->r_logws);
    if (r->r_logws == NULL) {
        abort();
    }
    logw *w = &r->r_logws[r->r_nlogws++];
    *w = (logw){.lw_id = ++r->r_next_wait,
                .lw_slot = li->slot,
                .lw_job = li->id,
                .lw_stream = li->stream,
                .lw_offset = li->offset,
                .lw_max = li->max_bytes};
    tick_after(self, TRD_WAIT_MAX_MS, TICK_LOGS, w->lw_id, 0);
}

static void
logw_answer(runner *r, size_t i, bool timed_out)
{
    logw w = r->r_logws[i];
    r->r_logws[i] = r->r_logws[--r->r_nlogws];
    job *j = job_find(r, w.lw_job);
    bool final = false, truncated = false;
    if (j != NULL) {
        truncated = j->j_truncated;
    } else {
        trd_job_rec rec;
        if (trd_store_get(r->r_d->d_store, w.lw_job, &rec) == TR_OK) {
            final = trd_job_state_final(rec.j_state);
            truncated = rec.j_truncated;
            trd_job_rec_fini(&rec);
        }
    }
    logs_reply(r, w.lw_slot, w.lw_job, w.lw_stream, w.lw_offset, w.lw_max, final, truncated,
               timed_out);
}

// logw_check answers the waiters of job id: those on stream, or all of
// them when stream is 0 (the job ended).
static void
logw_check(runner *r, uint64_t id, uint32_t stream)
{
    for (size_t i = 0; i < r->r_nlogws;) {
        const logw *w = &r->r_logws[i];
        if (w->lw_job == id && (stream == 0 || w->lw_stream == stream)) {
            logw_answer(r, i, false);
        } else {
            i++;
        }
    }
}

static void
run_add(runner *r, job *j)
{
    if (r->r_nrun == r->r_caprun) {
        r->r_caprun = r->r_caprun != 0 ? r->r_caprun * 2 : 16;
        r->r_run = realloc(r->r_run, r->r_caprun * sizeof *r->r_run);
        if (r->r_run == NULL) {
            abort();
        }
    }
    r->r_run[r->r_nrun++] = j;
}

static void
job_release(runner *r, job *j)
{
    if (j->j_running) {
        group *g = &r->r_groups[j->j_gidx];
        uint32_t w = j->j_slots < g->g_limit ? j->j_slots : g->g_limit;
        g->g_used -= w;
        j->j_running = false;
        r->r_nrunning--;
        r->r_dirty = true; // its slots are free
    }
    if (!tr_actor_addr_eq(j->j_proc, TR_ACTOR_NONE)) {
        for (size_t i = 0; i < r->r_nrun; i++) {
            if (r->r_run[i] == j) {
                r->r_run[i] = r->r_run[--r->r_nrun];
                break;
            }
        }
    }
    j->j_proc = TR_ACTOR_NONE;
    if (j->j_worker != NULL) {
        trd_unplace(j->j_worker, j->j_wslots);
        j->j_worker = NULL;
    }
    out_close(j); // its output is complete: every chunk came before the exit
}

// job_finish records a final state (in memory now, in the store when the
// update commits).
static void
job_finish(runner *r, job *j, trd_job_state st, const char *error, int32_t code, int32_t sig,
           const Troupe__V1__ProcessExit *px)
{
    job_release(r, j);
    ready_remove(r, j);
    j->j_state = st;
    // Its dependants hear of it in settle.
    if (!j->j_fin_queued && j->j_ndnts > 0) {
        if (r->r_nfin == r->r_capfin) {
            r->r_capfin = r->r_capfin != 0 ? r->r_capfin * 2 : 64;
            r->r_fin = realloc(r->r_fin, r->r_capfin * sizeof *r->r_fin);
            if (r->r_fin == NULL) {
                abort();
            }
        }
        r->r_fin[r->r_nfin++] = j;
        j->j_fin_queued = true;
    }
    r->r_dirty = true;
    trd_job_update u = {
        .u_id = j->j_id,
        .u_kind = TRD_UPDATE_FINISH,
        .u_state = st,
        .u_exit_code = code,
        .u_signal = sig,
        .u_error = error,
    };
    if (px != NULL) {
        j->j_truncated = j->j_truncated || px->truncated;
        u.u_stdout_bytes = px->stdout_bytes;
        u.u_stderr_bytes = px->stderr_bytes;
        u.u_truncated = j->j_truncated;
    }
    trd_log("job_end", "id=%llu state=%s exit_code=%d signal=%d error=\"%s\"",
            (unsigned long long)j->j_id, trd_job_state_name(st), code, sig,
            error != NULL ? error : "");
    store_update(r, g_self, &u);
}

static void
job_start_record(runner *r, job *j, int32_t pid, uint64_t start)
{
    trd_job_update u = {
        .u_id = j->j_id,
        .u_kind = TRD_UPDATE_START,
        .u_attempt = j->j_attempt,
        .u_leader_pid = pid,
        .u_leader_start = start,
    };
    store_update(r, g_self, &u);
}

// ---------------------------------------------------------------------------
// Starting jobs.

// build_env returns the daemon's environment with spec's entries and the
// job's markers (TROUPE_JOB_ID, TROUPE_JOB_STATE_DIR: orphans.h) added or
// replacing ones of the same name (malloc'd array; the strings of spec and
// environ, plus the NAME=VALUE strings it makes, listed in *owned).
static char **
build_env(const runner *r, const job *j, char ***owned)
{
    const Troupe__V1__JobSpec *s = j->j_spec;
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    size_t extra = s->n_env + 2;
    char **env = xcalloc(n + extra + 1, sizeof *env);
    char **mine = xcalloc(extra + 1, sizeof *mine);
    memcpy(env, environ, n * sizeof *env);
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%llu", (unsigned long long)j->j_id);
    for (size_t i = 0; i < extra; i++) {
        const char *name, *val;
        if (i < s->n_env) {
            name = s->env[i]->name;
            val = s->env[i]->value;
        } else if (i == s->n_env) {
            name = TRD_ENV_JOB_ID;
            val = idbuf;
        } else {
            name = TRD_ENV_STATE_DIR;
            val = r->r_d->d_state_dir;
        }
        size_t nl = strlen(name), vl = strlen(val);
        char *kv = malloc(nl + vl + 2);
        if (kv == NULL) {
            abort();
        }
        memcpy(kv, name, nl);
        kv[nl] = '=';
        memcpy(kv + nl + 1, val, vl + 1);
        mine[i] = kv;
        size_t k = 0;
        while (k < n && !(strncmp(env[k], name, nl) == 0 && env[k][nl] == '=')) {
            k++;
        }
        env[k] = kv;
        if (k == n) {
            n++;
        }
    }
    *owned = mine;
    return env;
}

static void
job_start_process(runner *r, tr_actor *self, job *j)
{
    const Troupe__V1__JobSpec *s = j->j_spec;
    char *sh_argv[] = {"/bin/sh", "-c", NULL, NULL};
    char **argv;
    char **argv_buf = NULL;
    if (s->task_case == TROUPE__V1__JOB_SPEC__TASK_SHELL) {
        sh_argv[2] = s->shell->script;
        argv = sh_argv;
    } else {
        argv_buf = xcalloc(s->exec->n_argv + 1, sizeof *argv_buf);
        memcpy(argv_buf, s->exec->argv, s->exec->n_argv * sizeof *argv_buf);
        argv = argv_buf;
    }
    if (s->n_rlimits > TR_PROC_RLIMITS_MAX) {
        free(argv_buf);
        job_finish(r, j, TRD_JOB_FAILED, "more rlimits than a process actor takes", 0, 0, NULL);
        return;
    }
    tr_proc_rlimit rl[TR_PROC_RLIMITS_MAX];
    for (size_t i = 0; i < s->n_rlimits; i++) {
        rl[i] = (tr_proc_rlimit){s->rlimits[i]->resource, s->rlimits[i]->soft, s->rlimits[i]->hard};
    }
    char **owned = NULL;
    char **envp = build_env(r, j, &owned);
    tr_proc_opts o = {
        .argv = argv,
        .envp = envp,
        .cwd = (s->cwd != NULL && s->cwd[0] != '\0') ? s->cwd : NULL,
        .stdin_data = s->stdin.data,
        .stdin_len = s->stdin.len,
        .timeout_ms = s->timeout_ms,
        .kill_grace_ms = s->kill_grace_ms,
        .search_path = true,
        .rlimits = s->n_rlimits > 0 ? rl : NULL,
        .nrlimits = s->n_rlimits,
        .output_cap = s->output_cap != 0 ? s->output_cap : r->r_d->d_output_cap,
        .stream_output = true, // the worker adds its cgroup
    };
    tr_actor_addr proc;
    uint32_t taken = 0;
    trd_worker *w = trd_place(r->r_place, j->j_slots, &taken); // pump saw the room
    tr_err rv = w != NULL ? trd_worker_start(w, &o, tr_actor_self(self), &proc) : TR_EAGAIN;
    free(argv_buf);
    if (owned != NULL) {
        for (size_t i = 0; owned[i] != NULL; i++) {
            free(owned[i]);
        }
        free(owned);
    }
    free(envp);
    if (rv != TR_OK) {
        if (w != NULL) {
            trd_unplace(w, taken);
        }
        char why[128];
        snprintf(why, sizeof why, "could not start a process actor: %s", tr_strerror(rv));
        job_finish(r, j, TRD_JOB_FAILED, why, 0, 0, NULL);
        return;
    }
    j->j_proc = proc;
    j->j_worker = w;
    j->j_wslots = taken;
    run_add(r, j);
}

// A plugin task's watcher: joins the task, encodes its result with the
// kind's encoder and tells the runner (design notes). Every watcher that
// starts sends exactly one PluginDone: from its poll when the task ends,
// or from its drop when a shutdown cancels it first (or refuses it).
typedef struct plugin_watch {
    tr_join pw_join; // the kind's task
    tr_kind_encode_fn pw_encode;
    tr_actor_addr pw_to;
    uint64_t pw_id, pw_gen;
    bool pw_sent;
} plugin_watch;

// The largest result a plugin kind's encoder may hand back (the job's
// output cap applies too, when it is written).
#define PLUGIN_RESULT_MAX ((size_t)1 << 24)

static void
plugin_done_send(plugin_watch *pw, tr_err err, const char *why, const void *data, size_t len)
{
    Troupe__Daemon__PluginDone *pd;
    size_t extra = len + (why != NULL ? strlen(why) + 1 : 0);
    tr_msg *m = tr_msg_new(&troupe__daemon__plugin_done__descriptor, extra, (void **)&pd);
    pd->id = pw->pw_id;
    pd->gen = pw->pw_gen;
    pd->err = (int32_t)err;
    if (why != NULL) {
        pd->error = tr_msg_strdup(m, why);
    }
    if (len > 0) {
        pd->result.data = tr_msg_memdup(m, data, len);
        pd->result.len = len;
    }
    pw->pw_sent = true;
    if (tr_actor_send(NULL, pw->pw_to, m) != TR_OK) {
        tr_msg_free(m); // the runner is gone: trouped is stopping
    }
}

static tr_poll
plugin_watch_poll(void *state, tr_cx *cx)
{
    plugin_watch *pw = state;
    tr_outcome out;
    if (tr_join_poll(&pw->pw_join, cx, &out) == TR_PENDING) {
        return TR_PENDING;
    }
    if (out.err != TR_OK) {
        // Cancelled: by the runner (cancel, timeout), or by a shutdown,
        // which must leave the job to the next start.
        tr_err err =
            out.err == TR_ECANCELED && tr_rt_is_shutdown(tr_cx_rt(cx)) ? TR_ESHUTDOWN : out.err;
        plugin_done_send(pw, err, NULL, NULL, 0);
        return TR_READY;
    }
    void *data = NULL;
    size_t len = 0;
    tr_err err = pw->pw_encode(&out, &data, &len);
    tr_outcome_fini(&out);
    if (err == TR_OK && len > PLUGIN_RESULT_MAX) {
        char why[128];
        snprintf(why, sizeof why, "a result of %zu bytes, over the %zu a plugin task may return",
                 len, PLUGIN_RESULT_MAX);
        plugin_done_send(pw, TR_ETOOBIG, why, NULL, 0);
    } else if (err == TR_OK) {
        plugin_done_send(pw, TR_OK, NULL, data, data != NULL ? len : 0);
    } else {
        // The encoder's text, if it left one (troupe/plugin.h); a NUL in
        // it ends it.
        char why[1024];
        if (data != NULL && len > 0) {
            snprintf(why, sizeof why, "%.*s", len < sizeof why ? (int)len : (int)sizeof why - 1,
                     (const char *)data);
        } else {
            snprintf(why, sizeof why, "%s (%s)", tr_strerror(err), tr_err_name(err));
        }
        plugin_done_send(pw, err, why, NULL, 0);
    }
    free(data);
    return TR_READY;
}

static void
plugin_watch_drop(void *state)
{
    plugin_watch *pw = state;
    if (!pw->pw_sent) {
        // A shutdown cancelled the watcher (or refused it at its start):
        // the kind's task goes too (a shutdown cancels every task).
        tr_task_abort(&pw->pw_join);
        tr_join_release(&pw->pw_join);
        plugin_done_send(pw, TR_ESHUTDOWN, NULL, NULL, 0);
    }
}

static const tr_task_spec plugin_watch_spec = {
    .name = "trouped.plugin_watch",
    .poll = plugin_watch_poll,
    .drop = plugin_watch_drop,
    .size = sizeof(plugin_watch),
};

// job_start_plugin starts j's plugin task and its watcher, and its
// timeout's Tick.
static void
job_start_plugin(runner *r, tr_actor *self, job *j)
{
    const Troupe__V1__PluginTask *pt = j->j_spec->plugin;
    tr_rt *rt = tr_actor_rt(self);
    char why[512];
    plugin_watch *pw;
    tr_err rv = tr_task_new(rt, &plugin_watch_spec, (void **)&pw);
    if (rv != TR_OK) {
        snprintf(why, sizeof why, "plugin kind '%s': could not start its task: %s", pt->kind,
                 tr_strerror(rv));
        job_finish(r, j, TRD_JOB_FAILED, why, 0, 0, NULL);
        return;
    }
    tr_join join;
    tr_kind_encode_fn encode = NULL;
    rv = trd_plugin_spawn(rt, pt->kind, pt->args.data, pt->args.len, &join, &encode);
    if (rv != TR_OK) {
        tr_task_discard(pw);
        if (rv == TR_ENOTFOUND) {
            // Submitted while a plugin had it; this trouped loads none that has.
            snprintf(why, sizeof why, "no plugin of this trouped registered the task kind '%s'",
                     pt->kind);
        } else {
            snprintf(why, sizeof why, "plugin kind '%s': its task did not start: %s (%s)", pt->kind,
                     tr_strerror(rv), tr_err_name(rv));
        }
        job_finish(r, j, TRD_JOB_FAILED, why, 0, 0, NULL);
        return;
    }
    j->j_task = tr_join_id(&join);
    pw->pw_join = join;
    pw->pw_encode = encode;
    pw->pw_to = tr_actor_self(self);
    pw->pw_id = j->j_id;
    pw->pw_gen = j->j_gen;
    if (tr_task_start(pw, NULL) != TR_OK) {
        return; // a shutdown: the watcher's drop cancelled the task and says so
    }
    if (j->j_spec->timeout_ms > 0) {
        tick_after(self, j->j_spec->timeout_ms, TICK_TIMEOUT, j->j_id, j->j_gen);
    }
}

static void
job_start(runner *r, tr_actor *self, job *j)
{
    group *g = &r->r_groups[j->j_gidx];
    j->j_running = true;
    r->r_nrunning++;
    g->g_used += j->j_slots < g->g_limit ? j->j_slots : g->g_limit;
    j->j_state = TRD_JOB_RUNNING;
    j->j_attempt++;
    j->j_gen++;
    j->j_timed_out = false;
    trd_log("job_start", "id=%llu attempt=%u group=\"%s\"", (unsigned long long)j->j_id,
            j->j_attempt, j->j_group);
    job_event(r, j);
    switch (j->j_spec->task_case) {
    case TROUPE__V1__JOB_SPEC__TASK_NOOP:
        job_start_record(r, j, 0, 0);
        job_finish(r, j, TRD_JOB_SUCCEEDED, NULL, 0, 0, NULL);
        return;
    case TROUPE__V1__JOB_SPEC__TASK_SLEEP:
        job_start_record(r, j, 0, 0);
        tick_after(self, j->j_spec->sleep->ms, TICK_SLEEP, j->j_id, j->j_gen);
        return;
    case TROUPE__V1__JOB_SPEC__TASK_EXEC:
    case TROUPE__V1__JOB_SPEC__TASK_SHELL:
        // START is recorded when ProcessStarted brings the leader's pid.
        job_start_process(r, self, j);
        return;
    case TROUPE__V1__JOB_SPEC__TASK_PLUGIN:
        job_start_record(r, j, 0, 0);
        job_start_plugin(r, self, j);
        return;
    default:
        job_finish(r, j, TRD_JOB_FAILED, "task kind not supported", 0, 0, NULL);
        return;
    }
}

// needs_worker: j runs a program, on a worker (placement.h).
static bool
needs_worker(const job *j)
{
    return j->j_spec->task_case == TROUPE__V1__JOB_SPEC__TASK_EXEC ||
           j->j_spec->task_case == TROUPE__V1__JOB_SPEC__TASK_SHELL;
}

// pump starts ready jobs while their groups have room: per group in heap
// order (priority, then id), and the head waits for room rather than let
// a lighter job pass it (a heavy job cannot starve; its weight is at most
// the group's limit). What a start ends at once (noop) may ready others:
// settle, and go round again until nothing starts.
static void
pump(runner *r, tr_actor *self)
{
    settle(r);
    bool started = true;
    uint32_t cap = r->r_d->d_max_running;
    while (started && !r->r_draining && (cap == 0 || r->r_nrunning < cap)) {
        started = false;
        for (size_t gi = 0; gi < r->r_ngroups; gi++) {
            for (;;) {
                group *g = &r->r_groups[gi]; // a start may grow r_groups
                if (g->g_paused || g->g_nheap == 0) {
                    break;
                }
                job *j = g->g_heap[0];
                uint32_t w = j->j_slots < g->g_limit ? j->j_slots : g->g_limit;
                if (g->g_used + w > g->g_limit || (cap != 0 && r->r_nrunning >= cap) ||
                    (needs_worker(j) && !trd_placement_room(r->r_place, j->j_slots))) {
                    break;
                }
                ready_remove(r, j);
                job_start(r, self, j);
                started = true;
                settle(r);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Waiters.
//
// A waiter keeps the ids whose final state is not committed yet (w_left);
// each final commit strikes its id from every waiter (on_committed), and a
// waiter with none left is answered. A job is done when it is not in memory
// and stored final, or in memory with its final state committed.

static void
wait_in(runner *r, tr_actor *self, const Troupe__Daemon__WaitIn *wi)
{
    uint64_t *left = xcalloc(wi->n_ids, sizeof *left);
    size_t nleft = 0;
    for (size_t i = 0; i < wi->n_ids; i++) {
        job *j = job_find(r, wi->ids[i]);
        if (j != NULL) {
            if (!j->j_final_committed) {
                left[nleft++] = wi->ids[i];
            }
            continue;
        }
        trd_job_rec rec;
        tr_err rv = trd_store_get(r->r_d->d_store, wi->ids[i], &rec);
        if (rv != TR_OK) {
            free(left);
            trd_reply_error(r->r_d, wi->slot, rv, "wait: job %llu: %s",
                            (unsigned long long)wi->ids[i],
                            rv == TR_ENOTFOUND ? "no such job" : tr_strerror(rv));
            return;
        }
        // Stored, not in memory: final (or its batch's JobsAdded is on
        // the way: then its final commit comes later, as for any other).
        if (!trd_job_state_final(rec.j_state)) {
            left[nleft++] = wi->ids[i];
        }
        trd_job_rec_fini(&rec);
    }
    if (nleft == 0) {
        free(left);
        trd_reply_jobs(r->r_d, wi->slot, "wait", wi->ids, wi->n_ids, false);
        return;
    }
    r->r_waits = realloc(r->r_waits, (r->r_nwaits + 1) * sizeof *r->r_waits);
    if (r->r_waits == NULL) {
        abort();
    }
    waiter *w = &r->r_waits[r->r_nwaits++];
    w->w_id = ++r->r_next_wait;
    w->w_slot = wi->slot;
    w->w_n = wi->n_ids;
    w->w_ids = xcalloc(wi->n_ids, sizeof *w->w_ids);
    memcpy(w->w_ids, wi->ids, wi->n_ids * sizeof *w->w_ids);
    w->w_left = left;
    w->w_nleft = nleft;
    uint64_t ms = wi->timeout_ms;
    if (ms == 0 || ms > TRD_WAIT_MAX_MS) {
        ms = TRD_WAIT_MAX_MS;
    }
    tick_after(self, ms, TICK_WAIT, w->w_id, 0);
}

static void
wait_end(runner *r, size_t i, bool timed_out)
{
    waiter w = r->r_waits[i];
    r->r_waits[i] = r->r_waits[--r->r_nwaits];
    trd_reply_jobs(r->r_d, w.w_slot, "wait", w.w_ids, w.w_n, timed_out);
    free(w.w_ids);
    free(w.w_left);
}

// wait_committed strikes job id (its final state is now durable) from the
// waiters, and answers those it was the last of.
static void
wait_committed(runner *r, uint64_t id)
{
    for (size_t i = 0; i < r->r_nwaits;) {
        waiter *w = &r->r_waits[i];
        for (size_t k = 0; k < w->w_nleft; k++) {
            if (w->w_left[k] == id) {
                w->w_left[k] = w->w_left[--w->w_nleft];
                break;
            }
        }
        if (w->w_nleft == 0) {
            wait_end(r, i, false);
        } else {
            i++;
        }
    }
}

// ---------------------------------------------------------------------------
// Messages.

static job *
job_of_proc(runner *r, tr_actor_addr proc)
{
    for (size_t i = 0; i < r->r_nrun; i++) {
        if (tr_actor_addr_eq(r->r_run[i]->j_proc, proc)) {
            return r->r_run[i];
        }
    }
    return NULL;
}

static uint64_t
backoff_ms(const Troupe__V1__JobSpec *s, uint32_t attempt)
{
    uint64_t ms = s->backoff_ms;
    for (uint32_t i = 1; i < attempt && ms != 0 && ms < (UINT64_MAX >> 1); i++) {
        ms *= 2;
    }
    if (s->backoff_max_ms != 0 && ms > s->backoff_max_ms) {
        ms = s->backoff_max_ms;
    }
    return ms;
}

// job_retry queues j for another attempt after its backoff (the failed
// attempt's exit code, signal and error are recorded).
static void
job_retry(runner *r, tr_actor *self, job *j, int32_t code, int32_t sig, const char *why)
{
    job_release(r, j);
    uint64_t wait = backoff_ms(j->j_spec, j->j_attempt);
    j->j_state = TRD_JOB_QUEUED;
    j->j_next_run_ms = trd_now_ms() + (int64_t)wait;
    j->j_gen++;
    job_event(r, j);
    trd_job_update u = {
        .u_id = j->j_id,
        .u_kind = TRD_UPDATE_RETRY,
        .u_attempt = j->j_attempt,
        .u_exit_code = code,
        .u_signal = sig,
        .u_error = why,
        .u_next_run_ms = j->j_next_run_ms,
    };
    trd_log("job_retry", "id=%llu attempt=%u backoff_ms=%llu error=\"%s\"",
            (unsigned long long)j->j_id, j->j_attempt, (unsigned long long)wait, why);
    store_update(r, g_self, &u);
    tick_after(self, wait, TICK_RETRY, j->j_id, j->j_gen);
}

static void
on_exit_msg(runner *r, tr_actor *self, tr_msg *m)
{
    const Troupe__V1__ProcessExit *px = tr_msg_body(m);
    job *j = job_of_proc(r, tr_msg_reply_to(m));
    if (j == NULL) {
        return;
    }
    if (j->j_abandon) {
        // Killed by a shutdown: the store keeps it running, and the next
        // start recovers it (retried or failed per its policy).
        job_release(r, j);
        return;
    }
    trd_job_state st;
    char why[256] = "";
    if (j->j_cancel) {
        st = TRD_JOB_CANCELLED;
        snprintf(why, sizeof why, "cancelled");
    } else if (px->error != NULL && px->error->code != 0) {
        st = TRD_JOB_FAILED;
        snprintf(why, sizeof why, "%s", tr_msg_reason_text(px->error));
    } else if (px->timed_out) {
        st = TRD_JOB_TIMED_OUT;
        snprintf(why, sizeof why, "timed out after %llu ms",
                 (unsigned long long)j->j_spec->timeout_ms);
    } else if (px->exited && px->code == 0) {
        st = TRD_JOB_SUCCEEDED;
    } else if (px->exited) {
        st = TRD_JOB_FAILED;
        snprintf(why, sizeof why, "exit code %d", px->code);
    } else {
        st = TRD_JOB_FAILED;
        snprintf(why, sizeof why, "killed by signal %d", px->signal);
    }
    if (st != TRD_JOB_SUCCEEDED && st != TRD_JOB_CANCELLED && j->j_attempt <= j->j_spec->retries) {
        // Another attempt after the backoff.
        job_retry(r, self, j, px->code, px->signal, why);
        return;
    }
    job_finish(r, j, st, why[0] != '\0' ? why : NULL, px->code, px->signal, px);
}

// job_output takes len bytes of j's output on stream: its file, its
// JobEvent, and the Logs that wait for it.
static void
job_output(runner *r, job *j, uint32_t stream, const uint8_t *data, size_t len)
{
    uint64_t off = j->j_out[stream - 1];
    append_output(r, j, stream, data, len);
    j->j_seq++;
    trd_publish(r->r_d, j->j_id, j->j_seq, j->j_state, stream, off, data, len);
    // The followers of this stream, in one pass: one waiting inside what
    // was just written gets it from the bytes in hand (no file read on the
    // blocking pool, one hop fewer on the way to the first output); the
    // others are answered from the file, as logw_check does.
    uint64_t end = j->j_out[stream - 1];
    for (size_t i = 0; i < r->r_nlogws;) {
        const logw *w = &r->r_logws[i];
        if (w->lw_job != j->j_id || w->lw_stream != stream) {
            i++;
            continue;
        }
        if (w->lw_offset < off || w->lw_offset >= end) {
            logw_answer(r, i, false);
            continue;
        }
        logw w0 = *w;
        r->r_logws[i] = r->r_logws[--r->r_nlogws];
        size_t from = (size_t)(w0.lw_offset - off), n = (size_t)(end - w0.lw_offset);
        if (n > w0.lw_max) {
            n = w0.lw_max;
        }
        Troupe__V1__LogChunk *lc;
        tr_msg *rm = log_reply_new(w0.lw_offset, j->j_truncated, false, &lc);
        lc->data.data = tr_msg_memdup(rm, data + from, n);
        lc->data.len = n;
        trd_reply(r->r_d, w0.lw_slot, rm);
    }
}

static void
on_output(runner *r, tr_msg *m)
{
    const Troupe__V1__ProcessOutput *po = tr_msg_body(m);
    job *j = job_of_proc(r, tr_msg_reply_to(m));
    if (j == NULL || (po->stream != 1 && po->stream != 2) || po->data.len == 0) {
        return;
    }
    job_output(r, j, (uint32_t)po->stream, po->data.data, po->data.len);
}

static void
on_committed(runner *r, const Troupe__Daemon__Committed *c)
{
    if (c->err != TR_OK) {
        trd_log("store_update_failed", "id=%llu kind=%u code=%s detail=\"%s\"",
                (unsigned long long)c->id, c->kind, tr_err_name((tr_err)c->err), c->detail);
    }
    if (c->kind != TRD_UPDATE_FINISH) {
        return;
    }
    job *j = job_find(r, c->id);
    if (j != NULL && trd_job_state_final(j->j_state)) {
        // Final in the store (or refused there: then the store holds the
        // truth and the runner lets the job go all the same).
        j->j_final_committed = true;
        job_event(r, j);
        settle(r); // its dependants know (they did already, unless it ended just now)
        job_remove(r, j);
        logw_check(r, c->id, 0);
    }
    wait_committed(r, c->id);
}

// cancel_job cancels j: a queued job at once, a running one by killing
// its process group (it is cancelled when its leader has exited).
static void
cancel_job(runner *r, job *j)
{
    if (trd_job_state_final(j->j_state) || j->j_abandon) {
        return;
    }
    if (j->j_state == TRD_JOB_QUEUED ||
        (tr_actor_addr_eq(j->j_proc, TR_ACTOR_NONE) && j->j_task.id == 0)) {
        job_finish(r, j, TRD_JOB_CANCELLED, "cancelled", 0, 0, NULL);
        return;
    }
    if (j->j_cancel) {
        return; // killed already
    }
    j->j_cancel = true;
    if (j->j_task.id != 0) {
        // A plugin task: cancelled by the runtime (TR_EFINISHED or
        // TR_ENOTFOUND: it ended, and its PluginDone is on the way).
        (void)tr_task_cancel(r->r_d->d_rt, j->j_task);
        return;
    }
    Troupe__V1__ProcessKill *pk;
    tr_msg *m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&pk);
    if (tr_actor_send(NULL, j->j_proc, m) != TR_OK) {
        tr_msg_free(m); // its exit is on the way
    }
}

typedef struct add_acc {
    runner *aa_r;
    job **aa_new;
    size_t aa_n;
} add_acc;

static void
added_each(void *arg, const trd_job_rec *rec)
{
    add_acc *a = arg;
    if (job_find(a->aa_r, rec->j_id) != NULL || trd_job_state_final(rec->j_state)) {
        return;
    }
    a->aa_new[a->aa_n++] = job_add(a->aa_r, rec);
}

// added_from_batch takes the batch's jobs into memory from the JobsAdded's
// copy of it (what the store inserted), without reading the store.
static bool
added_from_batch(runner *r, const Troupe__Daemon__JobsAdded *ja, add_acc *a)
{
    Troupe__V1__SubmitBatch *b =
        troupe__v1__submit_batch__unpack(NULL, ja->batch.len, ja->batch.data);
    if (b == NULL || b->n_jobs != ja->count) {
        if (b != NULL) {
            troupe__v1__submit_batch__free_unpacked(b, NULL);
        }
        return false;
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < b->n_jobs; i++) {
        const Troupe__V1__JobSpec *js = b->jobs[i];
        if (job_find(r, ja->first_id + i) != NULL) {
            continue;
        }
        size_t n = troupe__v1__job_spec__get_packed_size(js);
        if (n > cap) {
            cap = n * 2;
            free(buf);
            buf = xcalloc(cap, 1);
        }
        troupe__v1__job_spec__pack(js, buf);
        a->aa_new[a->aa_n++] =
            job_new(r, ja->first_id + i, js->name, ja->request_id, js->group, js->priority, buf, n);
    }
    free(buf);
    troupe__v1__submit_batch__free_unpacked(b, NULL);
    return true;
}

static void
on_added(runner *r, const Troupe__Daemon__JobsAdded *ja)
{
    if (ja->reply) {
        trd_reply_submitted(r->r_d, ja->reply_slot, ja->first_id, ja->count, false);
    }
    for (size_t i = 0; i < ja->n_groups; i++) {
        group *g = group_get(r, ja->groups[i]->name);
        g->g_limit = ja->groups[i]->parallel != 0 ? ja->groups[i]->parallel : r->r_d->d_cores;
    }
    add_acc a = {.aa_r = r, .aa_new = xcalloc(ja->count, sizeof(job *))};
    if (!added_from_batch(r, ja, &a)) {
        // No copy of the batch: its rows, from the store.
        trd_list_query q = {.q_after_id = ja->first_id - 1};
        uint64_t left = ja->count;
        while (left > 0) {
            q.q_limit = left < TRD_STORE_LIST_MAX ? (uint32_t)left : TRD_STORE_LIST_MAX;
            uint64_t next = 0;
            tr_err rv = trd_store_list(r->r_d->d_store, &q, added_each, &a, &next);
            if (rv != TR_OK) {
                trd_log("load_failed", "first_id=%llu code=%s", (unsigned long long)ja->first_id,
                        tr_err_name(rv));
                break;
            }
            left -= q.q_limit;
            if (next == 0) {
                break;
            }
            q.q_after_id = next;
        }
    }
    for (size_t i = 0; i < a.aa_n; i++) {
        job_link(r, a.aa_new[i]);
    }
    for (size_t i = 0; i < a.aa_n; i++) {
        job *j = a.aa_new[i];
        if (!trd_job_state_final(j->j_state)) {
            job_event(r, j);
        }
        for (size_t k = 0; k < r->r_nprecancel; k++) {
            if (r->r_precancel[k] == j->j_id) {
                r->r_precancel[k] = r->r_precancel[--r->r_nprecancel];
                cancel_job(r, j);
                break;
            }
        }
    }
    free(a.aa_new);
    r->r_dirty = true;
}

// ---------------------------------------------------------------------------
// Cancel, pause and resume, shutdown.

static void
on_cancel(runner *r, tr_actor *self, const Troupe__Daemon__CancelIn *ci)
{
    (void)self;
    // Every id first: an unknown one cancels nothing.
    for (size_t i = 0; i < ci->n_ids; i++) {
        if (job_find(r, ci->ids[i]) != NULL) {
            continue;
        }
        trd_job_rec rec;
        tr_err rv = trd_store_get(r->r_d->d_store, ci->ids[i], &rec);
        if (rv != TR_OK) {
            trd_reply_error(r->r_d, ci->slot, rv, "cancel: job %llu: %s",
                            (unsigned long long)ci->ids[i],
                            rv == TR_ENOTFOUND ? "no such job" : tr_strerror(rv));
            return;
        }
        bool fin = trd_job_state_final(rec.j_state);
        trd_job_rec_fini(&rec);
        if (!fin) {
            // Stored, not final, not in memory: its JobsAdded is on the way.
            r->r_precancel = realloc(r->r_precancel, (r->r_nprecancel + 1) * sizeof(uint64_t));
            if (r->r_precancel == NULL) {
                abort();
            }
            r->r_precancel[r->r_nprecancel++] = ci->ids[i];
        }
    }
    for (size_t i = 0; i < ci->n_ids; i++) {
        job *j = job_find(r, ci->ids[i]);
        if (j != NULL) {
            cancel_job(r, j);
        }
    }
    trd_log("cancel", "ids=%zu first=%llu", ci->n_ids, (unsigned long long)ci->ids[0]);
    trd_reply_ack(r->r_d, ci->slot, false);
}

typedef struct group_ctx {
    trd_daemon *gc_d;
    uint32_t gc_slot;
} group_ctx;

// group_done runs on the store thread once the pause (or resume) is
// durable: only then is it acknowledged.
static void
group_done(void *arg, tr_err err, const trd_submit_result *res)
{
    group_ctx *gc = arg;
    if (err != TR_OK) {
        trd_reply_error(gc->gc_d, gc->gc_slot, err, "group: %s", res->r_detail);
    } else {
        trd_reply_ack(gc->gc_d, gc->gc_slot, false);
    }
    free(gc);
}

static void
on_group(runner *r, const Troupe__Daemon__GroupIn *gi)
{
    // In memory at once (no job of a paused group starts from here on),
    // in the store before the Ack (a restart keeps it).
    group *g = group_get(r, gi->group);
    g->g_paused = gi->pause;
    r->r_dirty = true;
    trd_log(gi->pause ? "group_paused" : "group_resumed", "group=\"%s\"", gi->group);
    group_ctx *gc = xcalloc(1, sizeof *gc);
    gc->gc_d = r->r_d;
    gc->gc_slot = gi->slot;
    trd_store_set_group(r->r_d->d_store, gi->group, gi->pause, 0, false, group_done, gc);
}

// abandon leaves the running jobs to the next start: their processes are
// killed (with kill, SIGTERM then SIGKILL after the grace; else by the
// runtime's shutdown) and nothing is recorded for them.
static void
abandon(runner *r, tr_actor *self, bool kill)
{
    for (size_t i = 0; i < r->r_cap; i++) {
        job *j = r->r_map[i];
        if (j == NULL || !j->j_running || j->j_abandon) {
            continue;
        }
        j->j_abandon = true;
        if (!kill || tr_actor_addr_eq(j->j_proc, TR_ACTOR_NONE)) {
            if (kill && j->j_task.id != 0) {
                (void)tr_task_cancel(r->r_d->d_rt, j->j_task); // its PluginDone is ignored
            }
            job_release(r, j);
            continue;
        }
        Troupe__V1__ProcessKill *pk;
        tr_msg *m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&pk);
        if (tr_actor_send(self, j->j_proc, m) != TR_OK) {
            tr_msg_free(m); // its exit is on the way
        }
    }
}

// drain_check casts the runner's vote to stop once a Shutdown has left no
// job running.
static void
drain_check(runner *r)
{
    if (!r->r_draining || r->r_drain_voted) {
        return;
    }
    if (r->r_nrunning > 0) {
        return;
    }
    r->r_drain_voted = true;
    trd_log("drained", "queued=%zu", r->r_n);
    trd_stop_vote(r->r_d);
}

static void
on_shutdown(runner *r, tr_actor *self, const Troupe__Daemon__ShutdownIn *si)
{
    bool first = !r->r_draining;
    r->r_draining = true;
    // The first Shutdown's reply is the other vote.
    trd_reply_ack(r->r_d, si->slot, first);
    if (si->immediate) {
        abandon(r, self, false);
    } else if (first && si->deadline_ms > 0) {
        tick_after(self, si->deadline_ms, TICK_DRAIN, 0, 0);
    }
}

static void
on_tick(runner *r, tr_actor *self, const Troupe__Daemon__Tick *t)
{
    switch (t->kind) {
    case TICK_WAIT:
        for (size_t i = 0; i < r->r_nwaits; i++) {
            if (r->r_waits[i].w_id == t->id) {
                wait_end(r, i, true);
                break;
            }
        }
        return;
    case TICK_LOGS:
        for (size_t i = 0; i < r->r_nlogws; i++) {
            if (r->r_logws[i].lw_id == t->id) {
                logw_answer(r, i, true);
                break;
            }
        }
        return;
    case TICK_DRAIN:
        trd_log("drain_deadline", "running=%zu", r->r_nrun);
        abandon(r, self, true);
        return;
    default:
        break;
    }
    job *j = job_find(r, t->id);
    if (j == NULL || j->j_gen != t->gen) {
        return;
    }
    if (t->kind == TICK_SLEEP && j->j_state == TRD_JOB_RUNNING) {
        job_finish(r, j, TRD_JOB_SUCCEEDED, NULL, 0, 0, NULL);
    } else if (t->kind == TICK_RETRY) {
        make_ready(r, j); // its time has come
    } else if (t->kind == TICK_TIMEOUT && j->j_state == TRD_JOB_RUNNING && j->j_task.id != 0 &&
               !j->j_cancel && !j->j_abandon) {
        // A plugin job's time is up: its task is cancelled, and the
        // PluginDone that follows ends it as timed out.
        j->j_timed_out = true;
        (void)tr_task_cancel(r->r_d->d_rt, j->j_task);
    }
}

// on_plugin_done ends the attempt of a plugin job whose task ended (its
// watcher's PluginDone), as on_exit_msg ends a process job's.
static void
on_plugin_done(runner *r, tr_actor *self, const Troupe__Daemon__PluginDone *pd)
{
    job *j = job_find(r, pd->id);
    if (j == NULL || j->j_gen != pd->gen || j->j_state != TRD_JOB_RUNNING || j->j_task.id == 0) {
        return; // an attempt that ended otherwise
    }
    j->j_task = (tr_task_id){0};
    tr_err err = (tr_err)pd->err;
    if (j->j_abandon || (err == TR_ESHUTDOWN && !j->j_cancel)) {
        // Left to the next start (a shutdown): the store keeps it
        // running, and nothing is recorded.
        j->j_abandon = true;
        job_release(r, j);
        return;
    }
    trd_job_state st;
    char why[1100] = "";
    Troupe__V1__ProcessExit px = TROUPE__V1__PROCESS_EXIT__INIT;
    if (j->j_cancel) {
        st = TRD_JOB_CANCELLED;
        snprintf(why, sizeof why, "cancelled");
    } else if (j->j_timed_out) {
        st = TRD_JOB_TIMED_OUT;
        snprintf(why, sizeof why, "timed out after %llu ms",
                 (unsigned long long)j->j_spec->timeout_ms);
    } else if (err == TR_OK) {
        // The result is the attempt's stdout, up to the job's cap.
        st = TRD_JOB_SUCCEEDED;
        uint64_t cap = j->j_spec->output_cap != 0 ? j->j_spec->output_cap : r->r_d->d_output_cap;
        size_t keep = pd->result.len < cap ? pd->result.len : (size_t)cap;
        px.stdout_bytes = pd->result.len;
        px.truncated = keep < pd->result.len;
        j->j_truncated = j->j_truncated || px.truncated;
        if (keep > 0) {
            job_output(r, j, 1, pd->result.data, keep);
        }
    } else if (err == TR_ECANCELED) {
        st = TRD_JOB_FAILED;
        snprintf(why, sizeof why, "its task was cancelled (not by trouped)");
    } else {
        st = TRD_JOB_FAILED;
        snprintf(why, sizeof why, "%s",
                 pd->error != NULL && pd->error[0] != '\0' ? pd->error : tr_strerror(err));
    }
    if (st != TRD_JOB_SUCCEEDED && st != TRD_JOB_CANCELLED && j->j_attempt <= j->j_spec->retries) {
        job_retry(r, self, j, 0, 0, why);
        return;
    }
    job_finish(r, j, st, why[0] != '\0' ? why : NULL, 0, 0, &px);
}

static void
runner_receive(tr_actor *self, void *state, tr_msg *m)
{
    runner *r = *(runner **)state;
    if (tr_msg_is(m, &troupe__daemon__jobs_added__descriptor)) {
        on_added(r, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__committed__descriptor)) {
        on_committed(r, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__v1__process_started__descriptor)) {
        const Troupe__V1__ProcessStarted *ps = tr_msg_body(m);
        job *j = job_of_proc(r, tr_msg_reply_to(m));
        if (j != NULL) {
            job_start_record(r, j, ps->pid, ps->start_time);
        }
    } else if (tr_msg_is(m, &troupe__v1__process_output__descriptor)) {
        on_output(r, m);
    } else if (tr_msg_is(m, &troupe__v1__process_exit__descriptor)) {
        on_exit_msg(r, self, m);
    } else if (tr_msg_is(m, &troupe__daemon__tick__descriptor)) {
        on_tick(r, self, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__plugin_done__descriptor)) {
        on_plugin_done(r, self, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__wait_in__descriptor)) {
        wait_in(r, self, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__logs_in__descriptor)) {
        on_logs(r, self, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__cancel_in__descriptor)) {
        on_cancel(r, self, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__group_in__descriptor)) {
        on_group(r, tr_msg_body(m));
    } else if (tr_msg_is(m, &troupe__daemon__shutdown_in__descriptor)) {
        on_shutdown(r, self, tr_msg_body(m));
    }
    // One pump per change that may let a job run (or fail, or skip).
    if (r->r_dirty) {
        r->r_dirty = false;
        pump(r, self);
    }
    drain_check(r);
}

static void
recover_each(void *arg, const trd_job_rec *rec)
{
    runner *r = arg;
    job *j = job_add(r, rec);
    if (r->r_nloaded == r->r_caploaded) {
        r->r_caploaded = r->r_caploaded != 0 ? r->r_caploaded * 2 : 256;
        r->r_loaded = realloc(r->r_loaded, r->r_caploaded * sizeof *r->r_loaded);
        if (r->r_loaded == NULL) {
            abort();
        }
    }
    r->r_loaded[r->r_nloaded++] = j;
    j->j_out[0] = out_size(r, j->j_id, 1);
    j->j_out[1] = out_size(r, j->j_id, 2);
    if (rec->j_state == TRD_JOB_RUNNING) {
        // Its leader, if it survived us: killed before anything runs.
        r->r_recover = realloc(r->r_recover, (r->r_nrecover + 1) * sizeof *r->r_recover);
        if (r->r_recover == NULL) {
            abort();
        }
        r->r_recover[r->r_nrecover++] =
            (trd_leader){.l_pid = rec->j_leader_pid, .l_start = rec->j_leader_start};
    }
}

// recover_running kills what an earlier trouped left running (orphans.h),
// then retries each job that was running, or fails it when it has no
// attempt left: execution is at least once.
static void
recover_running(runner *r, tr_actor *self)
{
    trd_orphan_stats os;
    trd_orphans_kill(r->r_d->d_state_dir, r->r_recover, r->r_nrecover, 10000, &os);
    trd_log("orphans", "running=%zu groups_killed=%zu procs=%zu left=%zu", r->r_nrecover,
            os.o_groups, os.o_procs, os.o_left);
    free(r->r_recover);
    r->r_recover = NULL;
    r->r_nrecover = 0;
    for (size_t i = 0; i < r->r_nloaded; i++) {
        job *j = r->r_loaded[i];
        if (j->j_state != TRD_JOB_RUNNING) {
            continue;
        }
        char why[128];
        snprintf(why, sizeof why, "daemon restarted while attempt %u ran", j->j_attempt);
        if (j->j_spec == NULL || j->j_attempt > j->j_spec->retries) {
            job_finish(r, j, TRD_JOB_FAILED, why, 0, 0, NULL);
            continue;
        }
        job_retry(r, self, j, 0, 0, why);
    }
}

static void runner_stopped(tr_actor *self, void *state, tr_err reason);

static void
group_each(void *arg, const char *name, bool paused, uint32_t parallel)
{
    runner *r = arg;
    group *g = group_get(r, name);
    g->g_paused = paused;
    g->g_limit = parallel != 0 ? parallel : r->r_d->d_cores;
}

static tr_err
runner_init(tr_actor *self, void *state, void *arg)
{
    trd_daemon *d = arg;
    runner *r = xcalloc(1, sizeof *r);
    r->r_d = d;
    *(runner **)state = r;
    g_self = tr_actor_self(self);
    // Recovery: the groups' limits and pauses, then the store's unfinished
    // jobs, before any request arrives.
    tr_err rv = trd_store_groups(d->d_store, group_each, r);
    if (rv == TR_OK) {
        rv = trd_store_load_unfinished(d->d_store, recover_each, r);
    }
    if (rv != TR_OK) {
        free(r->r_recover);
        free(r->r_loaded);
        runner_stopped(self, state, rv);
        return rv;
    }
    // The stored retry times still to come (recover_running's retries set
    // their own timers).
    int64_t now = trd_now_ms();
    for (size_t i = 0; i < r->r_nloaded; i++) {
        job *j = r->r_loaded[i];
        if (j->j_state == TRD_JOB_QUEUED && j->j_next_run_ms > now) {
            tick_after(self, (uint64_t)(j->j_next_run_ms - now), TICK_RETRY, j->j_id, j->j_gen);
        }
    }
    recover_running(r, self);
    // After the orphans are gone: a dead trouped's empty cgroups go too.
    char err[512];
    const char *mode = r->r_d->d_cgroup_mode;
    if (!trd_cgroup_setup(mode, r->r_cgroup, sizeof r->r_cgroup, err, sizeof err)) {
        fprintf(stderr, "trouped: %s\n", err);
        free(r->r_loaded);
        runner_stopped(self, state, TR_EINVAL);
        return TR_EINVAL;
    }
    trd_log("cgroup", "mode=%s parent=\"%s\"", mode != NULL ? mode : "auto", r->r_cgroup);
    // One worker today: trouped itself (placement.h).
    r->r_place = trd_placement_new();
    trd_placement_add_local(r->r_place, tr_actor_rt(self), r->r_cgroup);
    for (size_t i = 0; i < r->r_nloaded; i++) {
        job_link(r, r->r_loaded[i]);
    }
    free(r->r_loaded);
    r->r_loaded = NULL;
    settle(r);
    trd_log("recovered", "unfinished=%zu", r->r_n);
    // The first pump comes with the first message; send one now.
    r->r_dirty = true;
    Troupe__Daemon__Tick *t;
    tr_msg *m = tr_msg_new(&troupe__daemon__tick__descriptor, 0, (void **)&t);
    t->kind = TICK_RETRY;
    if (tr_actor_send(NULL, g_self, m) != TR_OK) {
        tr_msg_free(m);
    }
    return TR_OK;
}

static void
runner_stopped(tr_actor *self, void *state, tr_err reason)
{
    runner *r = *(runner **)state;
    for (size_t i = 0; i < r->r_cap; i++) {
        if (r->r_map[i] != NULL) {
            job_free(r->r_map[i]);
        }
    }
    free(r->r_map);
    free(r->r_fin);
    for (size_t i = 0; i < r->r_ngroups; i++) {
        free(r->r_groups[i].g_name);
        free(r->r_groups[i].g_heap);
    }
    free(r->r_groups);
    for (size_t i = 0; i < r->r_nwaits; i++) {
        free(r->r_waits[i].w_ids);
        free(r->r_waits[i].w_left);
    }
    free(r->r_waits);
    // Requests still waiting: their contexts close with the socket.
    free(r->r_logws);
    free(r->r_precancel);
    free(r->r_run);
    trd_placement_free(r->r_place);
    trd_cgroup_cleanup(r->r_cgroup);
    free(r);
}

static const tr_actor_spec runner_spec = {
    .name = "trouped.runner",
    .size = sizeof(runner *),
    .init = runner_init,
    .receive = runner_receive,
    .stopped = runner_stopped,
};

tr_err
trd_runner_start(trd_daemon *d)
{
    return tr_actor_spawn(d->d_rt, &runner_spec, d, NULL, &d->d_runner);
}
