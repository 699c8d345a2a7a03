// test_reactor_io: adversarial tests of the reactor's registrations and of
// tr_io's lifecycle across workers (reactor/reactor.c, io/io.c): several
// waiters on one direction, churn across workers, slot reuse and close with
// events and system calls in flight, end of file and hang-up, slab growth,
// and borrowed blocking descriptors watched one-shot.
//
// The stale-event and shared blocking descriptor tests each reproduced a
// defect of the runtime before it was fixed.
#define _GNU_SOURCE
#include "reactor_test.h"

// ===========================================================================
// Several tasks waiting on the same direction of one tr_io: one edge must
// wake them all. READ: K tasks each read one byte per round from one pipe;
// the thread writes the round's K bytes in one write (one edge), in odd
// rounds only once all K wait; a per-round barrier keeps a fast reader
// from taking a second byte. A reader left unwoken stalls the round.
// WRITE: K writers queued behind a full socket buffer, then a drain.

typedef struct rd_ctl {
    tr_rt *rt;
    int wfd;
    unsigned k;
    uint64_t rounds;
    tu_event *next; // next[r * k + i]: round r is over, for reader i (one waker each)
    atomic_uint_fast64_t arrived;
    bool timed_out;
    uint64_t failed_round, arrived_at_fail;
} rd_ctl;

typedef struct rd_task {
    int tr_pc;
    tr_io *io;
    rd_ctl *c;
    unsigned i;
    uint64_t r;
    char b;
    size_t n;
    tr_err ioerr;
} rd_task;

static tr_poll
rd_poll(void *arg, tr_cx *cx)
{
    rd_task *st = arg;
    TR_BEGIN(st);
    for (st->r = 0; st->r < st->c->rounds; st->r++) {
        TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n, &st->ioerr));
        TU_CHECK(st->n == 1);
        atomic_fetch_add(&st->c->arrived, 1);
        TR_AWAIT(st, tu_event_poll(&st->c->next[st->r * st->c->k + st->i], cx));
    }
    TR_END(st);
}

static void
rd_drop(void *arg)
{
    rd_task *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec rd_spec = {
    .name = "rd", .poll = rd_poll, .drop = rd_drop, .size = sizeof(rd_task)};

static void *
rd_thread(void *arg)
{
    rd_ctl *c = arg;
    char bytes[16];
    memset(bytes, 'r', sizeof bytes);
    for (uint64_t r = 0; r < c->rounds; r++) {
        if (r % 2 == 1) {
            // All K registered as waiters, every worker asleep.
            (void)wait_idle(c->rt, 0, TU_WAIT_MS);
        }
        TU_CHECK(write(c->wfd, bytes, c->k) == (ssize_t)c->k);
        if (!wait_u64(&c->arrived, c->k * (r + 1), TU_WAIT_MS)) {
            c->timed_out = true;
            c->failed_round = r;
            c->arrived_at_fail = atomic_load(&c->arrived) - c->k * r;
            tr_rt_dump(c->rt, stdout);
            for (uint64_t q = r * c->k; q < c->rounds * c->k; q++) {
                tu_event_set(&c->next[q]); // let the test end
            }
            return NULL;
        }
        for (unsigned i = 0; i < c->k; i++) {
            tu_event_set(&c->next[r * c->k + i]);
        }
    }
    return NULL;
}

static void
run_same_readers(unsigned workers, tr_sched_kind sched)
{
    tr_rt *rt = rt_new(workers, sched, NULL);
    rd_ctl c = {.rt = rt, .k = 6, .rounds = BY_SAN(300, 200)};
    c.next = calloc(c.rounds * c.k, sizeof(tu_event));
    for (uint64_t r = 0; r < c.rounds * c.k; r++) {
        tu_event_init(&c.next[r]);
    }
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    c.wfd = tr_io_fd(wr);
    tr_join js[6];
    for (unsigned i = 0; i < c.k; i++) {
        tu_start(rt, &rd_spec, &(rd_task){.io = tr_io_ref(rd), .c = &c, .i = i}, &js[i]);
    }
    pthread_t thr;
    tu_thread_start(&thr, rd_thread, &c);
    unsigned bad = run_joinall(rt, js, c.k, 6 * TU_WAIT_MS);
    tu_thread_join(thr);
    tu_checks_pass();
    if (c.timed_out) {
        fail_msg("[%s, %u workers] round %llu: only %llu of %u readers woke", sched_str(sched),
                 workers, (unsigned long long)c.failed_round, (unsigned long long)c.arrived_at_fail,
                 c.k);
    }
    assert_int_equal(bad, 0);
    tr_io_close(rd);
    tr_io_close(wr);
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    for (uint64_t r = 0; r < c.rounds * c.k; r++) {
        tu_event_destroy(&c.next[r]);
    }
    free(c.next);
    tu_rt_free_clean(rt);
}

static void
test_rx_same_direction_readers(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_same_readers(3, all_scheds[s]);
    }
    run_same_readers(1, TR_SCHED_RR);
}

typedef struct wq_writer {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    char msg[64];
    tr_err err;
} wq_writer;

static tr_poll
wq_writer_poll(void *arg, tr_cx *cx)
{
    wq_writer *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, st->msg, sizeof st->msg, NULL, &st->err));
    TU_CHECK(st->err == TR_OK);
    TR_END(st);
}

static void
wq_writer_drop(void *arg)
{
    wq_writer *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec wq_writer_spec = {
    .name = "wq_writer", .poll = wq_writer_poll, .drop = wq_writer_drop, .size = sizeof(wq_writer)};

typedef struct wq_drain {
    int tr_pc;
    tr_io *io;
    tu_event *go;
    size_t want, got;
    char buf[4096];
    size_t n;
    tr_err ioerr;
} wq_drain;

static tr_poll
wq_drain_poll(void *arg, tr_cx *cx)
{
    wq_drain *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(st->go, cx));
    while (st->got < st->want) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
        TU_CHECK(st->n > 0);
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->got += st->n;
    }
    TU_CHECK(st->got == st->want);
    TR_END(st);
}

static const tr_task_spec wq_drain_spec = {
    .name = "wq_drain", .poll = wq_drain_poll, .size = sizeof(wq_drain)};

typedef struct wq_ctl {
    tr_rt *rt;
    tu_event go;
    bool not_idle;
} wq_ctl;

static void *
wq_thread(void *arg)
{
    wq_ctl *c = arg;
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    tu_event_set(&c->go);
    return NULL;
}

// fill_socket writes to fd until the kernel says EAGAIN; returns the bytes.
static size_t
fill_socket(int fd)
{
    static char chunk[4096];
    size_t total = 0;
    for (size_t sz = sizeof chunk; sz > 0; sz /= 2) {
        for (;;) {
            ssize_t n = send(fd, chunk, sz, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0) {
                break;
            }
            total += (size_t)n;
        }
    }
    return total;
}

static void
test_rx_same_direction_writers(void **state)
{
    (void)state;
    enum { K = 5 };
    for (int s = 0; s < 3; s++) {
        tr_rt *rt = rt_new(3, all_scheds[s], NULL);
        for (int round = 0; round < BY_SAN(20, 12); round++) {
            int sv[2];
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv),
                             0);
            tr_io *a, *b;
            assert_int_equal(tr_io_open(rt, sv[0], 0, &a), TR_OK);
            assert_int_equal(tr_io_open(rt, sv[1], 0, &b), TR_OK);
            size_t filled = fill_socket(sv[0]);
            wq_ctl c = {.rt = rt};
            tu_event_init(&c.go);
            tr_join js[K + 1];
            for (int i = 0; i < K; i++) {
                wq_writer w = {.io = tr_io_ref(a)};
                memset(w.msg, 'a' + i, sizeof w.msg);
                tu_start(rt, &wq_writer_spec, &w, &js[i]);
            }
            tu_start(rt, &wq_drain_spec, &(wq_drain){.io = b, .go = &c.go, .want = filled + K * 64},
                     &js[K]);
            pthread_t thr;
            tu_thread_start(&thr, wq_thread, &c);
            unsigned bad = run_joinall(rt, js, K + 1, 6 * TU_WAIT_MS);
            tu_thread_join(thr);
            tu_checks_pass();
            assert_false(c.not_idle);
            assert_int_equal(bad, 0);
            tu_event_destroy(&c.go);
            tr_io_close(a);
            tr_io_close(b);
        }
        assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
        tu_rt_free_clean(rt);
    }
}

// ===========================================================================
// Churn across workers: parents open a pipe, hand a reference to a child
// task (wherever the scheduler puts it), write one byte, and close the read
// end while the child may be waiting, in the middle of its read, or done;
// slots are reused all along while events for closed registrations may
// still be queued. A child reads its own parent's byte or TR_ECLOSED,
// nothing else; no descriptor leaks.

typedef struct ch_stats {
    atomic_int data, closed;
} ch_stats;

typedef struct ch_child {
    int tr_pc;
    tr_io *io;
    ch_stats *s;
    unsigned char want;
    unsigned char buf[16];
    size_t n;
    tr_err ioerr;
} ch_child;

static tr_poll
ch_child_poll(void *arg, tr_cx *cx)
{
    ch_child *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
    if (st->ioerr == TR_OK && st->n > 0) {
        TU_CHECK(st->n == 1);
        TU_CHECK(st->buf[0] == st->want);
        atomic_fetch_add(&st->s->data, 1);
    } else {
        TU_CHECK(st->ioerr == TR_ECLOSED);
        atomic_fetch_add(&st->s->closed, 1);
    }
    TR_END(st);
}

static void
ch_child_drop(void *arg)
{
    ch_child *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec ch_child_spec = {
    .name = "ch_child", .poll = ch_child_poll, .drop = ch_child_drop, .size = sizeof(ch_child)};

typedef struct ch_parent {
    int tr_pc;
    ch_stats *s;
    unsigned id, i, iters;
    tr_io *rd, *wr;
    tr_join child;
    tr_outcome o;
    unsigned char b;
    size_t n;
    tr_err ioerr;
} ch_parent;

static tr_poll
ch_parent_poll(void *arg, tr_cx *cx)
{
    ch_parent *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->iters; st->i++) {
        {
            int p[2];
            TU_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
            TU_CHECK(tr_io_open(rt, p[0], 0, &st->rd) == TR_OK);
            TU_CHECK(tr_io_open(rt, p[1], 0, &st->wr) == TR_OK);
            TU_CHECK(tr_spawn(rt, &ch_child_spec, NULL,
                              &(ch_child){.io = tr_io_ref(st->rd),
                                          .s = st->s,
                                          .want = (unsigned char)(st->id * 37 + st->i)},
                              &st->child) == TR_OK);
        }
        if (st->i % 3 == 0) {
            TR_YIELD(st, cx);
        }
        st->b = (unsigned char)(st->id * 37 + st->i);
        TR_AWAIT(st, tr_write(st->wr, cx, &st->b, 1, &st->n, &st->ioerr));
        TU_CHECK(st->n == 1);
        if (st->i % 2 == 0) {
            tr_io_close(st->rd);
            st->rd = NULL;
        }
        TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->o));
        TU_CHECK(st->o.err == TR_OK);
        if (st->rd != NULL) {
            tr_io_close(st->rd);
            st->rd = NULL;
        }
        tr_io_close(st->wr);
        st->wr = NULL;
    }
    TR_END(st);
}

static const tr_task_spec ch_parent_spec = {
    .name = "ch_parent", .poll = ch_parent_poll, .size = sizeof(ch_parent)};

static void
test_rx_churn_across_workers(void **state)
{
    (void)state;
    enum { P = 6 };
    for (int s = 0; s < 3; s++) {
        int fds0 = tu_count_fds();
        tr_rt *rt = rt_new(3, all_scheds[s], NULL);
        ch_stats st;
        atomic_init(&st.data, 0);
        atomic_init(&st.closed, 0);
        tr_join js[P];
        unsigned iters = BY_SAN(400, 250);
        for (unsigned i = 0; i < P; i++) {
            tu_start(rt, &ch_parent_spec, &(ch_parent){.s = &st, .id = i, .iters = iters}, &js[i]);
        }
        unsigned bad = run_joinall(rt, js, P, 6 * TU_WAIT_MS);
        tu_checks_pass();
        assert_int_equal(bad, 0);
        print_message("  [%s] children: %d read their byte, %d saw the close\n",
                      sched_str(all_scheds[s]), atomic_load(&st.data), atomic_load(&st.closed));
        assert_int_equal(atomic_load(&st.data) + atomic_load(&st.closed), P * iters);
        assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
        assert_int_equal(rt->r_reactor->rx_nchunks, 1);
        tu_rt_free_clean(rt);
        assert_int_equal(tu_count_fds(), fds0);
    }
}

// The driver looks a registration up by {index, generation} and only then
// takes its lock: a close and a reopen on another worker in between (the
// churn above does this all the time) hand the old event to the new
// registration (spurious readiness and wakes; a blocking borrowed
// descriptor would then be read without an event and block its worker).
// ThreadSanitizer sees it as a race between tr__io_event and io_open; a
// plain build cannot observe it reliably (the window is a few
// instructions wide).
static void
test_rx_stale_event_on_reused_slot(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(2, TR_SCHED_WS, NULL);
    ch_stats st;
    atomic_init(&st.data, 0);
    atomic_init(&st.closed, 0);
    enum { P = 4 };
    tr_join js[P];
    for (unsigned i = 0; i < P; i++) {
        tu_start(rt, &ch_parent_spec, &(ch_parent){.s = &st, .id = i, .iters = BY_SAN(1000, 300)},
                 &js[i]);
    }
    unsigned bad = run_joinall(rt, js, P, 6 * TU_WAIT_MS);
    tu_checks_pass();
    assert_int_equal(bad, 0);
#if !defined(__SANITIZE_THREAD__)
    print_message("  (only ThreadSanitizer observes this defect)\n");
#endif
    tu_rt_free_clean(rt);
}

// ===========================================================================
// tr_io_close from a plain thread while a task on a worker waits on the
// descriptor or is in the middle of a read of it, then a new pipe at once
// (which takes the freed descriptor number, if it was freed): the task ends
// with TR_ECLOSED, never reads a byte of the new pipe, never sees EBADF.

typedef struct cr_result {
    uint64_t got;
    int foreign;
    tr_err end;
    sem_t fin;
} cr_result;

typedef struct cr_task {
    int tr_pc;
    tr_io *io;
    cr_result *res;
    unsigned char buf[512];
    size_t n;
    tr_err ioerr;
} cr_task;

static tr_poll
cr_poll(void *arg, tr_cx *cx)
{
    cr_task *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        for (size_t i = 0; i < st->n; i++) {
            if (st->buf[i] != 'A') {
                st->res->foreign++;
            }
        }
        st->res->got += st->n;
    }
    st->res->end = st->ioerr == TR_OK ? TR_EEOF : st->ioerr;
    TR_END(st);
}

static void
cr_drop(void *arg)
{
    cr_task *st = arg;
    tr_io_release(st->io);
    sem_post(&st->res->fin);
}

static const tr_task_spec cr_spec = {
    .name = "cr", .poll = cr_poll, .drop = cr_drop, .size = sizeof(cr_task)};

typedef struct cft_ctl {
    tr_rt *rt;
    tr_sched_kind sched;
    tu_event finished;
    char msg[256];
} cft_ctl;

static void *
cft_thread(void *arg)
{
    cft_ctl *c = arg;
    tr_rt *rt = c->rt;
    static char as[256];
    memset(as, 'A', sizeof as);
    int rounds = BY_SAN(150, 100);
    for (int round = 0; round < rounds && c->msg[0] == '\0'; round++) {
        int sv[2];
        TU_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
        tr_io *io;
        TU_CHECK(tr_io_open(rt, sv[0], 0, &io) == TR_OK);
        cr_result res = {.end = TR_OK};
        sem_init(&res.fin, 0, 0);
        tr_join j = TR_JOIN_NONE;
        // A Spawn message: any worker, worker 0 included.
        TU_CHECK(tr_spawn(rt, &cr_spec, NULL, &(cr_task){.io = tr_io_ref(io), .res = &res}, &j) ==
                 TR_OK);
        if (round % 2 == 0) {
            // A burst: the close lands while reads are running.
            for (int k = 0; k < 200; k++) {
                (void)send(sv[1], as, sizeof as, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k % 16 == 0) {
                    sched_yield();
                }
            }
        } else {
            // The task waits for data: the close wakes it.
            (void)wait_idle(rt, 0, TU_WAIT_MS);
        }
        tr_io_close(io);
        // The descriptor number, if already free, goes to this pipe.
        int p[2];
        TU_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
        char zs[64];
        memset(zs, 'Z', sizeof zs);
        TU_CHECK(write(p[1], zs, sizeof zs) == (ssize_t)sizeof zs);
        if (!tu_sem_wait_ms(&res.fin, TU_WAIT_MS)) {
            snprintf(c->msg, sizeof c->msg,
                     "[%s] round %d: the reader did not end after tr_io_close", sched_str(c->sched),
                     round);
            break; // (leaks the round's descriptors: the test fails anyway)
        }
        tr_outcome o;
        TU_CHECK(tr_join_wait(&j, &o) == TR_OK);
        if (res.foreign != 0 || res.end != TR_ECLOSED) {
            snprintf(c->msg, sizeof c->msg,
                     "[%s] round %d: the reader ended with %s after %llu bytes, %d of them "
                     "not its own",
                     sched_str(c->sched), round, tr_strerror(res.end), (unsigned long long)res.got,
                     res.foreign);
        }
        close(sv[1]);
        close(p[0]);
        close(p[1]);
        sem_destroy(&res.fin);
    }
    tu_event_set(&c->finished);
    return NULL;
}

typedef struct cft_root {
    int tr_pc;
    cft_ctl *c;
} cft_root;

static tr_poll
cft_root_poll(void *arg, tr_cx *cx)
{
    cft_root *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(&st->c->finished, cx));
    TR_END(st);
}

static const tr_task_spec cft_root_spec = {
    .name = "cft_root", .poll = cft_root_poll, .size = sizeof(cft_root)};

static void
run_close_from_thread(unsigned workers, tr_sched_kind sched)
{
    tr_rt *rt = rt_new(workers, sched, NULL);
    cft_ctl c = {.rt = rt, .sched = sched};
    tu_event_init(&c.finished);
    pthread_t thr;
    tu_thread_start(&thr, cft_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 9 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &cft_root_spec, NULL, &(cft_root){.c = &c}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    if (c.msg[0] != '\0') {
        fail_msg("%s", c.msg);
    }
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    tu_event_destroy(&c.finished);
    tu_rt_free_clean(rt);
}

static void
test_rx_close_from_thread_during_reads(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_close_from_thread(3, all_scheds[s]);
    }
}

// ===========================================================================
// End of file and hang-up. A reader with a large buffer (every read short,
// so each one clears the cached readiness) must see all the data and then
// end of file, whether the hang-up arrives with the data before it waits,
// while it waits, or while it reads; over a socket (EPOLLRDHUP) and a pipe
// (EPOLLHUP).

typedef struct eof_task {
    int tr_pc;
    tr_io *io;
    char buf[4096];
    size_t n;
    tr_err ioerr;
    size_t total;
    tr_err end;
    struct eof_task *snap; // the test's copy of the state at the end
} eof_task;

static tr_poll
eof_poll(void *arg, tr_cx *cx)
{
    eof_task *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->total += st->n;
    }
    st->end = st->ioerr == TR_OK ? TR_EEOF : st->ioerr;
    *st->snap = *st;
    TR_END(st);
}

static const tr_task_spec eof_spec = {.name = "eof", .poll = eof_poll, .size = sizeof(eof_task)};

typedef struct eof_ctl {
    tr_rt *rt;
    int fd; // the peer's end (blocking)
    bool socket;
    int mode; // 0: while waiting, 1: concurrently
    size_t len;
    uint64_t seed;
} eof_ctl;

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void
eof_send(eof_ctl *c)
{
    static char data[20000];
    size_t off = 0;
    while (off < c->len) {
        size_t n = 1 + xorshift(&c->seed) % 3000;
        if (n > c->len - off) {
            n = c->len - off;
        }
        ssize_t w = write(c->fd, data + off, n);
        TU_CHECK(w > 0);
        if (w <= 0) {
            break;
        }
        off += (size_t)w;
    }
    if (c->socket) {
        TU_CHECK(shutdown(c->fd, SHUT_WR) == 0);
    } else {
        close(c->fd);
        c->fd = -1;
    }
}

static void *
eof_thread(void *arg)
{
    eof_ctl *c = arg;
    if (c->mode == 0) {
        (void)wait_idle(c->rt, 0, TU_WAIT_MS);
    }
    eof_send(c);
    return NULL;
}

static void
test_rx_eof_and_rdhup(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(2, TR_SCHED_WS, NULL);
    uint64_t seed = 0x12345678abcdefull;
    for (int round = 0; round < BY_SAN(240, 150); round++) {
        eof_ctl c = {.rt = rt, .socket = round % 2 == 0, .mode = (round / 2) % 3, .seed = seed};
        c.len = 1 + xorshift(&seed) % 20000;
        int fds[2];
        if (c.socket) {
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        } else {
            assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        }
        eof_task end = {0}, *t = &end;
        eof_task init = {.snap = &end};
        assert_int_equal(tr_io_open(rt, fds[0], 0, &init.io), TR_OK);
        c.fd = fds[1];
        pthread_t thr;
        bool threaded = c.mode != 2;
        if (threaded) {
            tu_thread_start(&thr, eof_thread, &c);
        } else {
            eof_send(&c); // all of it, and the hang-up, before the first read
        }
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
        assert_int_equal(tr_rt_run(rt, &eof_spec, NULL, &init, NULL), TR_OK);
        tu_watchdog_stop(&wd);
        if (threaded) {
            tu_thread_join(thr);
        }
        tu_checks_pass();
        if (t->total != c.len || t->end != TR_EEOF) {
            fail_msg("round %d (%s, mode %d): read %zu of %zu bytes, ended with %s", round,
                     c.socket ? "socket" : "pipe", c.mode, t->total, c.len, tr_strerror(t->end));
        }
        tr_io_close(init.io);
        if (c.fd >= 0) {
            close(c.fd);
        }
    }
    tu_rt_free_clean(rt);
}

// A writer blocked on a full socket buffer wakes when the peer closes (a
// hang-up wakes both directions) and gets TR_EPIPE or TR_ECONNRESET. And a
// half-close by the peer (EPOLLRDHUP) ends the reader of the same tr_io
// with end of file but leaves its writer working.

typedef struct hup_writer {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    char *buf;
    size_t len, wrote;
    tr_err err;
    struct hup_writer *snap; // the test's copy of the state at the end
} hup_writer;

static tr_poll
hup_writer_poll(void *arg, tr_cx *cx)
{
    hup_writer *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, st->buf, st->len, &st->wrote, &st->err));
    *st->snap = *st;
    TR_END(st);
}

static void
hup_writer_drop(void *arg)
{
    hup_writer *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec hup_writer_spec = {.name = "hup_writer",
                                             .poll = hup_writer_poll,
                                             .drop = hup_writer_drop,
                                             .size = sizeof(hup_writer)};

typedef struct hup_ctl {
    tr_rt *rt;
    int peer;
    bool half;
    size_t drain;
    bool not_idle;
} hup_ctl;

static void *
hup_thread(void *arg)
{
    hup_ctl *c = arg;
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    if (!c->half) {
        close(c->peer);
        return NULL;
    }
    // Half-close (the reader of our tr_io sees EOF), then drain what the
    // writer sends, blocking.
    TU_CHECK(shutdown(c->peer, SHUT_WR) == 0);
    static char buf[65536];
    size_t got = 0;
    while (got < c->drain) {
        ssize_t n = read(c->peer, buf, sizeof buf);
        TU_CHECK(n > 0);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    return NULL;
}

static void
test_rx_hangup_wakes_writer(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(2, TR_SCHED_WS, NULL);
    size_t len = 1 << 20;
    char *big = calloc(1, len);
    for (int round = 0; round < BY_SAN(40, 24); round++) {
        bool half = round % 2 == 1;
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        tr_io *io;
        assert_int_equal(tr_io_open(rt, sv[0], 0, &io), TR_OK);
        size_t filled = fill_socket(sv[0]);
        tr_join js[2];
        hup_writer wend = {0}, *w = &wend;
        tu_start(rt, &hup_writer_spec,
                 &(hup_writer){.io = tr_io_ref(io), .buf = big, .len = len, .snap = &wend}, &js[0]);
        unsigned n = 1;
        eof_task rend = {0}, *r = &rend;
        if (half) {
            tu_start(rt, &eof_spec, &(eof_task){.io = io, .snap = &rend}, &js[1]);
            n = 2;
        }
        hup_ctl c = {.rt = rt, .peer = sv[1], .half = half, .drain = filled + len};
        pthread_t thr;
        tu_thread_start(&thr, hup_thread, &c);
        unsigned bad = run_joinall(rt, js, n, 3 * TU_WAIT_MS);
        tu_thread_join(thr);
        tu_checks_pass();
        assert_false(c.not_idle);
        assert_int_equal(bad, 0);
        if (half) {
            assert_int_equal(w->err, TR_OK);
            assert_int_equal(w->wrote, len);
            assert_int_equal(r->end, TR_EEOF);
            assert_int_equal(r->total, 0);
            close(sv[1]);
        } else if (w->err != TR_EPIPE && w->err != TR_ECONNRESET) {
            fail_msg("round %d: the writer ended with %s after the peer closed", round,
                     tr_strerror(w->err));
        }
        tr_io_close(io);
    }
    free(big);
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    tu_rt_free_clean(rt);
}

// ===========================================================================
// Thousands of registrations: the slab grows chunk by chunk (256 entries)
// while the driver, on other workers, already looks up events for the
// first ones; every event reaches its registration; freed slots are
// reused afterwards.

typedef struct mg_ctl {
    int *fds;
    tr_io **ios; // all open until the end: the slab holds n at once
    unsigned n;
    atomic_uint_fast64_t published, done;
    bool timed_out;
} mg_ctl;

typedef struct mg_task {
    int tr_pc;
    tr_io *io;
    mg_ctl *c;
    uint64_t v;
    size_t n;
    tr_err ioerr;
} mg_task;

static tr_poll
mg_poll(void *arg, tr_cx *cx)
{
    mg_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, efd_read_fn, &st->v, &st->n, &st->ioerr));
    TU_CHECK(st->n == sizeof(uint64_t));
    TU_CHECK(st->v == 1);
    atomic_fetch_add(&st->c->done, 1);
    TR_END(st);
}

static const tr_task_spec mg_spec = {.name = "mg", .poll = mg_poll, .size = sizeof(mg_task)};

typedef struct mg_root {
    int tr_pc;
    mg_ctl *c;
    tr_join *js;
    unsigned i;
    tr_outcome o;
} mg_root;

static tr_poll
mg_root_poll(void *arg, tr_cx *cx)
{
    mg_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->c->n; st->i++) {
        {
            int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            TU_CHECK(fd >= 0);
            mg_task t = {.c = st->c};
            TU_CHECK(tr_io_open(rt, fd, 0, &t.io) == TR_OK);
            st->c->ios[st->i] = t.io;
            st->c->fds[st->i] = fd;
            st->js[st->i] = tu_spawn(cx, &mg_spec, &t);
            atomic_store(&st->c->published, st->i + 1);
        }
        if (st->i % 64 == 63) {
            TR_YIELD(st, cx);
        }
    }
    for (st->i = 0; st->i < st->c->n; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->js[st->i], cx, &st->o));
        TU_CHECK(st->o.err == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec mg_root_spec = {
    .name = "mg_root", .poll = mg_root_poll, .size = sizeof(mg_root)};

static void *
mg_thread(void *arg)
{
    mg_ctl *c = arg;
    uint64_t j = 0;
    uint64_t deadline = tu_now_ns() + 3ull * TU_WAIT_MS * TR_NS_PER_MS;
    while (j < c->n) {
        uint64_t p = atomic_load(&c->published);
        if (j == p) {
            if (tu_now_ns() > deadline) {
                c->timed_out = true;
                return NULL;
            }
            sched_yield();
            continue;
        }
        while (j < p) {
            efd_add(c->fds[j++], 1);
        }
    }
    return NULL;
}

static void
run_many_regs(tr_sched_kind sched)
{
    tr_rt *rt = rt_new(3, sched, NULL);
    mg_ctl c = {.n = BY_SAN(3000, 2000)};
    c.fds = calloc(c.n, sizeof(int));
    c.ios = calloc(c.n, sizeof(tr_io *));
    tr_join *js = calloc(c.n, sizeof(tr_join));
    pthread_t thr;
    tu_thread_start(&thr, mg_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &mg_root_spec, NULL, &(mg_root){.c = &c, .js = js}, NULL),
                     TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_false(c.timed_out);
    assert_int_equal(atomic_load(&c.done), c.n);
    tr__reactor *rx = rt->r_reactor;
    assert_int_equal(atomic_load(&rx->rx_nregs), c.n);
    uint32_t chunks = rx->rx_nchunks;
    print_message("  [%s] %u registrations, %u chunk(s)\n", sched_str(sched), c.n, chunks);
    assert_true(chunks >= (c.n + TR__REG_CHUNK - 1) / TR__REG_CHUNK);
    for (unsigned i = 0; i < c.n; i++) {
        tr_io_close(c.ios[i]);
    }
    assert_int_equal(atomic_load(&rx->rx_nregs), 0);
    // The freed slots are reused: as many again fit in the same chunks.
    tr_io **ios = calloc(c.n, sizeof(tr_io *));
    for (unsigned i = 0; i < c.n; i++) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        assert_true(fd >= 0);
        assert_int_equal(tr_io_open(rt, fd, 0, &ios[i]), TR_OK);
    }
    assert_int_equal(rx->rx_nchunks, chunks);
    for (unsigned i = 0; i < c.n; i++) {
        tr_io_close(ios[i]);
    }
    assert_int_equal(atomic_load(&rx->rx_nregs), 0);
    free(ios);
    free(js);
    free(c.fds);
    free(c.ios);
    tu_rt_free_clean(rt);
}

static void
test_rx_many_registrations(void **state)
{
    (void)state;
    run_many_regs(TR_SCHED_WS);
    run_many_regs(TR_SCHED_RR);
}

// ===========================================================================
// Borrowed blocking descriptors are watched one-shot and level-triggered:
// each readiness event allows one system call ("an operation runs only
// after an event said the direction is ready, does one system call, and
// forgets the readiness"), because a second call would block the worker
// thread. K tasks wait to read one byte each from one borrowed blocking
// pipe; one byte arrives per round, so exactly one call per round may run.
// The operation probes with poll() before reading and counts the calls
// that would have blocked (and returns EAGAIN instead of blocking); it
// starts 0.2 ms after the readiness was claimed (as after a preemption).

typedef struct os_ctl {
    tr_rt *rt;
    int wfd;
    unsigned rounds;
    atomic_uint_fast64_t got;
    atomic_int would_block;
    bool timed_out;
    pthread_mutex_t mu;
} os_ctl;

static ssize_t
os_fn(int fd, void *arg)
{
    os_ctl *c = arg;
    // The call starts a moment after the readiness was claimed (as after a
    // preemption): other waiters woken by the same event run meanwhile.
    uint64_t t0 = tu_now_ns();
    while (tu_now_ns() - t0 < 200 * 1000) {
    }
    // Probe and read under a lock, so that the probe itself is not racy
    // (two probes seeing the one byte, then one read blocking).
    pthread_mutex_lock(&c->mu);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0) {
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_add(&c->would_block, 1); // read(2) would block here
        errno = EAGAIN;
        return -1;
    }
    char b;
    ssize_t n = read(fd, &b, 1);
    pthread_mutex_unlock(&c->mu);
    return n;
}

typedef struct os_task {
    int tr_pc;
    tr_io *io;
    os_ctl *c;
    size_t n;
    tr_err ioerr;
} os_task;

static tr_poll
os_poll(void *arg, tr_cx *cx)
{
    os_task *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, os_fn, st->c, &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            TU_CHECK(st->ioerr == TR_OK); // end of file
            break;
        }
        atomic_fetch_add(&st->c->got, 1);
    }
    TR_END(st);
}

static void
os_drop(void *arg)
{
    os_task *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec os_spec = {
    .name = "os", .poll = os_poll, .drop = os_drop, .size = sizeof(os_task)};

static void *
os_thread(void *arg)
{
    os_ctl *c = arg;
    for (unsigned r = 0; r < c->rounds; r++) {
        (void)wait_idle(c->rt, 0, TU_WAIT_MS); // every reader waits
        TU_CHECK(write(c->wfd, "b", 1) == 1);
        if (!wait_u64(&c->got, r + 1, TU_WAIT_MS)) {
            c->timed_out = true;
            break;
        }
    }
    close(c->wfd); // end of file for everyone
    return NULL;
}

static void
run_oneshot_shared(unsigned workers, tr_sched_kind sched, os_ctl *c)
{
    enum { K = 3 };
    tr_rt *rt = rt_new(workers, sched, NULL);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0); // blocking
    tr_io *rd;
    assert_int_equal(tr_io_open(rt, p[0], TR_IO_BORROW, &rd), TR_OK);
    c->rt = rt;
    c->wfd = p[1];
    tr_join js[K];
    for (int i = 0; i < K; i++) {
        tu_start(rt, &os_spec, &(os_task){.io = tr_io_ref(rd), .c = c}, &js[i]);
    }
    pthread_t thr;
    tu_thread_start(&thr, os_thread, c);
    unsigned bad = run_joinall(rt, js, K, 6 * TU_WAIT_MS);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_int_equal(bad, 0);
    assert_false(c->timed_out);
    assert_int_equal(atomic_load(&c->got), c->rounds);
    tr_io_close(rd);
    assert_int_equal(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0); // still blocking
    close(p[0]);
    tu_rt_free_clean(rt);
}

static void
test_rx_oneshot_shared_blocking_fd(void **state)
{
    (void)state;
    int total = 0;
    for (int s = 0; s < 3; s++) {
        os_ctl c = {.rounds = BY_SAN(200, 60)};
        pthread_mutex_init(&c.mu, NULL);
        run_oneshot_shared(3, all_scheds[s], &c);
        pthread_mutex_destroy(&c.mu);
        print_message("  [%s] %u bytes, %d call(s) that would have blocked a worker\n",
                      sched_str(all_scheds[s]), c.rounds, atomic_load(&c.would_block));
        total += atomic_load(&c.would_block);
    }
    assert_int_equal(total, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rx_same_direction_readers),
        cmocka_unit_test(test_rx_same_direction_writers),
        cmocka_unit_test(test_rx_churn_across_workers),
        cmocka_unit_test(test_rx_stale_event_on_reused_slot),
        cmocka_unit_test(test_rx_close_from_thread_during_reads),
        cmocka_unit_test(test_rx_eof_and_rdhup),
        cmocka_unit_test(test_rx_hangup_wakes_writer),
        cmocka_unit_test(test_rx_many_registrations),
        cmocka_unit_test(test_rx_oneshot_shared_blocking_fd),
    };
    return tu_run(tests);
}
