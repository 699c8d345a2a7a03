// Design notes.
//
// A process actor is an actor plus up to four tasks around one shared
// record (`run`, reference-counted: the actor and each task hold one):
//   - the waiter awaits the leader's exit (tr_process_wait, through a pidfd
//     the reactor watches) under the timeout; on a timeout, a ProcessKill
//     with no signal or a stop of the actor it sends SIGTERM to the process
//     group, then SIGKILL once the grace period has passed;
//   - two readers drain stdout and stderr into the record, up to the cap
//     (past it they keep reading and throw the bytes away, so the program
//     never blocks on a full pipe);
//   - a writer feeds the stdin bytes and closes stdin.
// The exit is the leader's: once it is reaped, the waiter gives the readers
// a short drain (DRAIN_MS, for what the program wrote just before it
// exited) and then reports what they have, even if a grandchild still holds
// the pipes; the readers are then cancelled. The waiter sends the owner its
// one ProcessExit and stops the actor. A program that cannot be started is
// reported the same way, at once, with the error.
//
// posix_spawn runs on the thread that calls tr_proc_actor_start (about 0.1
// ms until exec): a caller on a worker blocks that worker for it. The
// daemon, which starts jobs in bursts, is expected to call from its own
// thread (or the blocking pool); moving the spawn onto the blocking pool
// here would make the start asynchronous, which the API does not need yet.
//
// The session: the runtime's TR_PROCESS_NEW_SESSION (setsid; the leader's
// pid is its session and group id, and it has no controlling terminal), so
// kill(-pid) reaches the program's children too, unless one of them made a
// session or group of its own (the daemon will add cgroups for those).
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include <troupe/io.h>
#include <troupe/process.h>
#include <troupe/proc_actor.h>
#include <troupe/time.h>

#include "actor_int.h"

#define DRAIN_MS 100
#define READ_CHUNK 16384

typedef struct run {
    _Atomic int r_refs;
    pthread_mutex_t r_lock; // the output and the flags below
    tr_rt *r_rt;
    tr_process *r_proc;
    pid_t r_pid;
    tr_actor_addr r_owner, r_self;
    unsigned char *r_out[2];
    size_t r_len[2], r_total[2], r_cap;
    bool r_truncated;
    bool r_done[2]; // a reader reached end of file
    bool r_term;    // SIGTERM the group, then SIGKILL (a kill request or a stop)
    bool r_killed;  // killed on request
    bool r_reported;
    tr_waker r_waiter; // the waiter's, to wake it on a request
    tr_join r_readers[2], r_writer;
    unsigned char *r_stdin;
    size_t r_stdin_len;
    uint64_t r_timeout_ms, r_grace_ms;
    tr_err r_start_err;
} run;

static void
run_unref(run *r)
{
    if (atomic_fetch_sub_explicit(&r->r_refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (r->r_proc != NULL) {
        tr_process_free(r->r_proc); // reaped already, or troupe reaps it later
    }
    free(r->r_out[0]);
    free(r->r_out[1]);
    free(r->r_stdin);
    pthread_mutex_destroy(&r->r_lock);
    free(r);
}

static void
killpg_safe(run *r, int sig)
{
    if (r->r_pid > 0) {
        kill(-r->r_pid, sig);
    }
}

// ---------------------------------------------------------------------------
// Readers and the writer.

typedef struct reader {
    run *rd_run;
    tr_io *rd_io;
    int rd_fd; // 0: stdout, 1: stderr (index into the record)
    unsigned char rd_buf[READ_CHUNK];
} reader;

static tr_poll
reader_poll(void *st, tr_cx *cx)
{
    reader *rd = st;
    run *r = rd->rd_run;
    for (;;) {
        size_t n = 0;
        tr_err err = TR_OK;
        if (tr_read(rd->rd_io, cx, rd->rd_buf, sizeof rd->rd_buf, &n, &err) == TR_PENDING) {
            return TR_PENDING;
        }
        pthread_mutex_lock(&r->r_lock);
        if (err != TR_OK || n == 0) {
            r->r_done[rd->rd_fd] = true;
            tr_waker w = r->r_waiter;
            pthread_mutex_unlock(&r->r_lock);
            tr_wake(w);
            return TR_READY;
        }
        size_t i = (size_t)rd->rd_fd;
        r->r_total[i] += n;
        size_t room = r->r_cap - r->r_len[i];
        size_t keep = n < room ? n : room;
        if (keep > 0) {
            if (r->r_out[i] == NULL) {
                r->r_out[i] = tra_zalloc(r->r_cap);
            }
            memcpy(r->r_out[i] + r->r_len[i], rd->rd_buf, keep);
            r->r_len[i] += keep;
        }
        if (keep < n) {
            r->r_truncated = true; // drained, not kept
        }
        pthread_mutex_unlock(&r->r_lock);
    }
}

static void
reader_drop(void *st)
{
    reader *rd = st;
    tr_io_close(rd->rd_io);
    run_unref(rd->rd_run);
}

static const tr_task_spec reader_spec = {"tr.proc.reader", reader_poll, reader_drop,
                                         sizeof(reader)};

typedef struct writer {
    run *wr_run;
    tr_io *wr_io;
    tr_io_op wr_op;
} writer;

static tr_poll
writer_poll(void *st, tr_cx *cx)
{
    writer *wr = st;
    run *r = wr->wr_run;
    size_t n;
    tr_err err;
    if (tr_write_all(wr->wr_io, cx, &wr->wr_op, r->r_stdin, r->r_stdin_len, &n, &err) ==
        TR_PENDING) {
        return TR_PENDING;
    }
    return TR_READY; // a program that closed its stdin early: EPIPE, nothing to do
}

static void
writer_drop(void *st)
{
    writer *wr = st;
    tr_io_close(wr->wr_io); // the program sees end of file
    run_unref(wr->wr_run);
}

static const tr_task_spec writer_spec = {"tr.proc.writer", writer_poll, writer_drop,
                                         sizeof(writer)};

// ---------------------------------------------------------------------------
// The report.

static void
report(run *r, const tr_exit_status *st, bool timed_out)
{
    Troupe__V1__ProcessExit *x;
    pthread_mutex_lock(&r->r_lock);
    if (r->r_reported) {
        pthread_mutex_unlock(&r->r_lock);
        return;
    }
    r->r_reported = true;
    tr_msg *m = tr_msg_new(&troupe__v1__process_exit__descriptor, r->r_len[0] + r->r_len[1] + 128,
                           (void **)&x);
    x->pid = (int32_t)r->r_pid;
    if (st != NULL) {
        x->exited = st->code >= 0;
        x->code = st->code;
        x->signal = st->signal;
    }
    x->timed_out = timed_out;
    x->killed = r->r_killed;
    x->stdout.data = tr_msg_memdup(m, r->r_out[0], r->r_len[0]);
    x->stdout.len = r->r_len[0];
    x->stderr.data = tr_msg_memdup(m, r->r_out[1], r->r_len[1]);
    x->stderr.len = r->r_len[1];
    x->stdout_bytes = r->r_total[0];
    x->stderr_bytes = r->r_total[1];
    x->truncated = r->r_truncated;
    if (r->r_start_err != TR_OK) {
        Troupe__V1__Reason *why = tr_msg_arena(m, sizeof *why);
        troupe__v1__reason__init(why);
        why->code = (int32_t)r->r_start_err;
        why->text = tr_msg_strdup(m, tr_strerror(r->r_start_err));
        x->error = why;
    }
    pthread_mutex_unlock(&r->r_lock);
    if (tr_actor_send(NULL, r->r_owner, m) != TR_OK) {
        tr_msg_free(m); // the owner is gone
    }
}

// ---------------------------------------------------------------------------
// The waiter.

enum { PH_RUN, PH_GRACE, PH_KILLED, PH_DRAIN, PH_DONE };

typedef struct waiter {
    run *w_run;
    int w_phase;
    bool w_timed_out;
    tr_timeout w_to;
    tr_timer w_drain;
    tr_exit_status w_st;
} waiter;

static tr_poll
waiter_poll(void *st, tr_cx *cx)
{
    waiter *w = st;
    run *r = w->w_run;
    pthread_mutex_lock(&r->r_lock);
    r->r_waiter = tr_cx_waker(cx);
    bool term = r->r_term;
    pthread_mutex_unlock(&r->r_lock);
    tr_err err = TR_OK;
    bool expired = false;
    for (;;) {
        switch (w->w_phase) {
        case PH_RUN:
            if (term) {
                tr_timeout_abandon(&w->w_to);
                killpg_safe(r, SIGTERM);
                w->w_phase = PH_GRACE;
                continue;
            }
            if (r->r_timeout_ms == 0) {
                if (tr_process_wait(r->r_proc, cx, &w->w_st, &err) == TR_PENDING) {
                    return TR_PENDING;
                }
            } else if (tr_timeout_poll(&w->w_to, cx, r->r_timeout_ms * 1000000u,
                                       tr_process_wait(r->r_proc, cx, &w->w_st, &err),
                                       &expired) == TR_PENDING) {
                return TR_PENDING;
            }
            if (expired) {
                w->w_timed_out = true;
                killpg_safe(r, SIGTERM);
                w->w_phase = PH_GRACE;
                continue;
            }
            w->w_phase = PH_DRAIN;
            continue;
        case PH_GRACE:
            if (tr_timeout_poll(&w->w_to, cx, r->r_grace_ms * 1000000u,
                                tr_process_wait(r->r_proc, cx, &w->w_st, &err),
                                &expired) == TR_PENDING) {
                return TR_PENDING;
            }
            if (expired) {
                killpg_safe(r, SIGKILL);
                w->w_phase = PH_KILLED;
                continue;
            }
            w->w_phase = PH_DRAIN;
            continue;
        case PH_KILLED:
            if (tr_process_wait(r->r_proc, cx, &w->w_st, &err) == TR_PENDING) {
                return TR_PENDING;
            }
            w->w_phase = PH_DRAIN;
            continue;
        case PH_DRAIN: {
            // The leader is gone: what is already in the pipes is read,
            // for at most DRAIN_MS (a grandchild may hold them for long).
            pthread_mutex_lock(&r->r_lock);
            bool drained = r->r_done[0] && r->r_done[1];
            pthread_mutex_unlock(&r->r_lock);
            if (!drained &&
                tr_sleep(&w->w_drain, cx, (uint64_t)DRAIN_MS * 1000000u) == TR_PENDING) {
                return TR_PENDING;
            }
            tr_timer_abandon(&w->w_drain);
            if (err != TR_OK) {
                w->w_st = (tr_exit_status){-1, 0, false};
            }
            report(r, &w->w_st, w->w_timed_out);
            for (int i = 0; i < 2; i++) {
                if (r->r_readers[i].j_key != 0) {
                    tr_task_abort(&r->r_readers[i]);
                    tr_join_release(&r->r_readers[i]);
                }
            }
            if (r->r_writer.j_key != 0) {
                tr_task_abort(&r->r_writer);
                tr_join_release(&r->r_writer);
            }
            tr_actor_stop_other(r->r_self, TR_OK, NULL);
            w->w_phase = PH_DONE;
            return TR_READY;
        }
        default:
            return TR_READY;
        }
    }
}

static void
waiter_drop(void *st)
{
    waiter *w = st;
    run *r = w->w_run;
    tr_timeout_abandon(&w->w_to);
    tr_timer_abandon(&w->w_drain);
    if (w->w_phase != PH_DONE) {
        // Cancelled (a shutdown) before the leader exited: nothing may
        // outlive the runtime.
        killpg_safe(r, SIGKILL);
        for (int i = 0; i < 2; i++) {
            tr_join_release(&r->r_readers[i]);
        }
        tr_join_release(&r->r_writer);
    }
    run_unref(r);
}

static const tr_task_spec waiter_spec = {"tr.proc.waiter", waiter_poll, waiter_drop,
                                         sizeof(waiter)};

// ---------------------------------------------------------------------------
// The actor.

typedef struct proc_state {
    run *p_run;
} proc_state;

static void
request_term(run *r, bool killed)
{
    pthread_mutex_lock(&r->r_lock);
    r->r_term = true;
    r->r_killed = r->r_killed || killed;
    tr_waker w = r->r_waiter;
    pthread_mutex_unlock(&r->r_lock);
    tr_wake(w);
}

static tr_err
proc_init(tr_actor *self, void *state, void *arg)
{
    run *r = arg;
    ((proc_state *)state)->p_run = r;
    r->r_self = tr_actor_self(self);
    return TR_OK;
}

static void
proc_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    run *r = ((proc_state *)state)->p_run;
    if (tr_msg_is(m, &troupe__v1__process_kill__descriptor)) {
        int sig = ((Troupe__V1__ProcessKill *)tr_msg_body(m))->signal;
        if (sig == 0) {
            request_term(r, true);
        } else if (sig > 0 && sig < 65) {
            killpg_safe(r, sig);
        }
    }
}

static void
proc_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    (void)reason;
    run *r = ((proc_state *)state)->p_run;
    pthread_mutex_lock(&r->r_lock);
    bool reported = r->r_reported;
    pthread_mutex_unlock(&r->r_lock);
    if (!reported) {
        request_term(r, true); // stopped from outside: the group goes too
    }
    run_unref(r);
}

static const tr_actor_spec proc_spec = {
    .name = "tr.process",
    .size = sizeof(proc_state),
    .init = proc_init,
    .receive = proc_receive,
    .stopped = proc_stopped,
};

static tr_err
start_task(run *r, const tr_task_spec *spec, void *init, tr_join *j)
{
    atomic_fetch_add_explicit(&r->r_refs, 1, memory_order_relaxed);
    tr_err err = tr_spawn(r->r_rt, spec, NULL, init, j);
    if (err == TR_EINVAL || err == TR_EEXHAUSTED || err == TR_ESHUTDOWN) {
        run_unref(r); // init never ran: the task holds nothing
    }
    return err;
}

tr_err
tr_proc_actor_start(tr_rt *rt, const tr_proc_opts *o, tr_actor_addr owner, tr_actor_addr *addr)
{
    if (rt == NULL || o == NULL || o->argv == NULL || o->argv[0] == NULL) {
        return TR_EINVAL;
    }
    run *r = tra_zalloc(sizeof *r);
    atomic_init(&r->r_refs, 2); // the actor's, and this call's until it returns
    pthread_mutex_init(&r->r_lock, NULL);
    r->r_rt = rt;
    r->r_owner = owner;
    r->r_cap = o->output_cap != 0 ? o->output_cap : TR_PROC_OUTPUT_CAP_DEFAULT;
    r->r_timeout_ms = o->timeout_ms;
    r->r_grace_ms = o->kill_grace_ms != 0 ? o->kill_grace_ms : 2000;
    if (o->stdin_len > 0) {
        r->r_stdin = tra_zalloc(o->stdin_len);
        memcpy(r->r_stdin, o->stdin_data, o->stdin_len);
        r->r_stdin_len = o->stdin_len;
    }
    tr_actor_addr me;
    tr_err err = tr_actor_spawn(rt, &proc_spec, r, NULL, &me);
    if (err != TR_OK) {
        run_unref(r);
        run_unref(r);
        return err;
    }
    tr_process_opts po = {
        .argv = o->argv,
        .envp = o->envp,
        .cwd = o->cwd,
        .stdio = {o->stdin_len > 0 ? TR_STDIO_PIPE : TR_STDIO_NULL, TR_STDIO_PIPE, TR_STDIO_PIPE},
        .flags = TR_PROCESS_NEW_SESSION | (o->search_path ? TR_PROCESS_SEARCH_PATH : 0u),
    };
    r->r_start_err = tr_process_spawn(rt, &po, &r->r_proc);
    if (r->r_start_err != TR_OK) {
        r->r_proc = NULL;
        report(r, NULL, false); // exactly one ProcessExit, with the error
        tr_actor_stop_other(me, TR_OK, NULL);
    } else {
        r->r_pid = tr_process_pid(r->r_proc);
        for (int i = 0; i < 2; i++) {
            reader rd = {.rd_run = r, .rd_io = tr_process_take_stdio(r->r_proc, i + 1), .rd_fd = i};
            tr_err e = start_task(r, &reader_spec, &rd, &r->r_readers[i]);
            if (e != TR_OK) {
                r->r_done[i] = true;
                if (e != TR_ECANCELED) {
                    tr_io_close(rd.rd_io); // its drop never ran
                }
            }
        }
        if (o->stdin_len > 0) {
            writer wr = {.wr_run = r, .wr_io = tr_process_take_stdio(r->r_proc, 0)};
            tr_err e = start_task(r, &writer_spec, &wr, &r->r_writer);
            if (e != TR_OK && e != TR_ECANCELED) {
                tr_io_close(wr.wr_io);
            }
        }
        waiter w = {.w_run = r};
        if (start_task(r, &waiter_spec, &w, NULL) != TR_OK) {
            killpg_safe(r, SIGKILL); // a shutdown began: nothing waits for it
        }
    }
    if (addr != NULL) {
        *addr = me;
    }
    run_unref(r);
    return TR_OK;
}
