// test_io: the reactor and tr_io (troupe/io.h) over pipes, socketpairs,
// eventfds and regular files: readiness caching, waiting and waking per
// direction, close while waiting, slot reuse, borrowed blocking
// descriptors, and many descriptors across several workers. Sockets over
// the network are test_net's.
#define _GNU_SOURCE
#include "../test_util.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

static tr_rt *
rt_workers(unsigned workers, tr_sched_kind sched)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = workers;
    cfg.sched = sched;
    return tu_rt_new_cfg(&cfg);
}

static void
make_pipe(tr_rt *rt, tr_io **rd, tr_io **wr)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(tr_io_open(rt, p[0], 0, rd), TR_OK);
    assert_int_equal(tr_io_open(rt, p[1], 0, wr), TR_OK);
}

static void
make_pair(tr_rt *rt, tr_io **a, tr_io **b)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(tr_io_open(rt, sv[0], 0, a), TR_OK);
    assert_int_equal(tr_io_open(rt, sv[1], 0, b), TR_OK);
}

// ---------------------------------------------------------------------------
// A reader that reads exactly `len` bytes into buf, and a writer that
// writes them in chunks, yielding between chunks. Each copies its final
// state to *snap (when not NULL) as it finishes, for the test to read.

typedef struct reader {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    char *buf;
    size_t len, got;
    tr_err err;
    bool close_when_done;
    struct reader *snap;
} reader;

static tr_poll
reader_poll(void *arg, tr_cx *cx)
{
    reader *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read_exact(st->io, cx, &st->op, st->buf, st->len, &st->got, &st->err));
    if (st->snap != NULL) {
        *st->snap = *st;
    }
    TR_END(st);
}

static void
reader_drop(void *arg)
{
    reader *st = arg;
    if (st->close_when_done) {
        tr_io_release(st->io);
    }
}

static const tr_task_spec reader_spec = {
    .name = "reader", .poll = reader_poll, .drop = reader_drop, .size = sizeof(reader)};

typedef struct writer {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    const char *buf;
    size_t len, off, chunk;
    tr_err err;
    bool close_when_done;
    struct writer *snap;
} writer;

static tr_poll
writer_poll(void *arg, tr_cx *cx)
{
    writer *st = arg;
    TR_BEGIN(st);
    for (st->off = 0; st->off < st->len; st->off += st->chunk) {
        TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, st->buf + st->off,
                                  st->len - st->off < st->chunk ? st->len - st->off : st->chunk,
                                  NULL, &st->err));
        if (st->err != TR_OK) {
            break;
        }
        TR_YIELD(st, cx);
    }
    if (st->snap != NULL) {
        *st->snap = *st;
    }
    TR_END(st);
}

static void
writer_drop(void *arg)
{
    writer *st = arg;
    if (st->close_when_done) {
        tr_io_release(st->io);
    }
}

static const tr_task_spec writer_spec = {
    .name = "writer", .poll = writer_poll, .drop = writer_drop, .size = sizeof(writer)};

static void
fill(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (char)((i * 131 + seed) & 0xff);
    }
}

// A root that joins two tasks.
typedef struct join2 {
    int tr_pc;
    tr_join a, b;
    tr_outcome oa, ob;
} join2;

static tr_poll
join2_poll(void *arg, tr_cx *cx)
{
    join2 *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_join_poll(&st->a, cx, &st->oa));
    TR_AWAIT(st, tr_join_poll(&st->b, cx, &st->ob));
    TR_END(st);
}

static const tr_task_spec join2_spec = {.name = "join2", .poll = join2_poll, .size = sizeof(join2)};

static void
run_transfer(tr_rt *rt, tr_io *rd, tr_io *wr, size_t len, size_t chunk, bool reader_first)
{
    char *src = malloc(len), *dst = calloc(1, len);
    fill(src, len, (unsigned)len);
    reader rend = {0}, *r = &rend;
    writer wend = {0}, *w = &wend;
    reader rinit = {.io = rd, .buf = dst, .len = len, .snap = r};
    writer winit = {.io = wr, .buf = src, .len = len, .chunk = chunk, .snap = w};
    join2 j = {0};
    if (reader_first) {
        tu_start(rt, &reader_spec, &rinit, &j.a);
        tu_start(rt, &writer_spec, &winit, &j.b);
    } else {
        tu_start(rt, &writer_spec, &winit, &j.b);
        tu_start(rt, &reader_spec, &rinit, &j.a);
    }
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &join2_spec, NULL, &j, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    assert_int_equal(r->err, TR_OK);
    assert_int_equal(w->err, TR_OK);
    assert_memory_equal(src, dst, len);
    free(src);
    free(dst);
}

static void
test_io_pipe_transfer(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    // More than a pipe holds, so the writer waits for room and the reader
    // for data, over and over.
    run_transfer(rt, rd, wr, 1 << 20, 7000, true);
    run_transfer(rt, rd, wr, 100000, 333, false);
    tr_io_close(rd);
    tr_io_close(wr);
    tu_rt_free_clean(rt);
}

// An edge that arrives before anyone waits is not lost: the data is
// written (by the test, outside the runtime) before the reader first polls.
static void
test_io_edge_before_wait(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    char buf[16] = {0};
    reader rend = {0}, *r = &rend;
    // First: reader waits (registers), then data comes from a thread.
    assert_int_equal(write(tr_io_fd(wr), "hel", 3), 3);
    assert_int_equal(write(tr_io_fd(wr), "lo", 2), 2);
    assert_int_equal(tr_rt_run(rt, &reader_spec, NULL,
                               &(reader){.io = rd, .buf = buf, .len = 5, .snap = r}, NULL),
                     TR_OK);
    assert_int_equal(r->err, TR_OK);
    assert_memory_equal(buf, "hello", 5);
    tr_io_close(rd);
    tr_io_close(wr);
    tu_rt_free_clean(rt);
}

// Data written by another thread while the runtime is parked in epoll.
typedef struct late_writer {
    tr_rt *rt;
    int fd;
    bool timed_out;
} late_writer;

static void *
late_writer_main(void *arg)
{
    late_writer *lw = arg;
    // Wait (bounded by time) until worker 0 is parked in the reactor.
    lw->timed_out =
        !TU_SPIN_UNTIL(atomic_load(&lw->rt->r_workers[0].w_park) == TR__PARK_DRIVER, TU_WAIT_MS);
    TU_CHECK(write(lw->fd, "abcdefgh", 8) == 8);
    return NULL;
}

static void
test_io_wake_parked_driver(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    char buf[8];
    late_writer lw = {.rt = rt, .fd = tr_io_fd(wr)};
    pthread_t t;
    tu_thread_start(&t, late_writer_main, &lw);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(
        tr_rt_run(rt, &reader_spec, NULL, &(reader){.io = rd, .buf = buf, .len = 8}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(t);
    tu_checks_pass();
    assert_false(lw.timed_out);
    assert_memory_equal(buf, "abcdefgh", 8);
    tr_io_close(rd);
    tr_io_close(wr);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Split halves: a reader task and a writer task on each end of one
// socketpair at once, both directions (4 tasks, 2 descriptors).

typedef struct join4 {
    int tr_pc;
    tr_join j[4];
    tr_outcome o;
    int i;
} join4;

static tr_poll
join4_poll(void *arg, tr_cx *cx)
{
    join4 *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 4; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->o));
    }
    TR_END(st);
}

static const tr_task_spec join4_spec = {.name = "join4", .poll = join4_poll, .size = sizeof(join4)};

static void
run_split(unsigned workers)
{
    tr_rt *rt = rt_workers(workers, TR_SCHED_WS);
    tr_io *a, *b;
    make_pair(rt, &a, &b);
    tr_io *ard, *awr, *brd, *bwr;
    tr_io_split(a, &ard, &awr);
    tr_io_split(b, &brd, &bwr);
    size_t len = 512 * 1024;
    char *src1 = malloc(len), *src2 = malloc(len);
    char *dst1 = calloc(1, len), *dst2 = calloc(1, len);
    fill(src1, len, 1);
    fill(src2, len, 2);
    join4 j = {0};
    struct {
        tr_io *rio, *wio;
        char *src, *dst;
    } dirs[2] = {{brd, awr, src1, dst1}, {ard, bwr, src2, dst2}};
    for (int d = 0; d < 2; d++) {
        writer w = {.io = dirs[d].wio,
                    .buf = dirs[d].src,
                    .len = len,
                    .chunk = 3000 + 1000 * (size_t)d,
                    .close_when_done = true};
        tu_start(
            rt, &reader_spec,
            &(reader){.io = dirs[d].rio, .buf = dirs[d].dst, .len = len, .close_when_done = true},
            &j.j[2 * d]);
        tu_start(rt, &writer_spec, &w, &j.j[2 * d + 1]);
    }
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &join4_spec, NULL, &j, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    assert_memory_equal(src1, dst1, len);
    assert_memory_equal(src2, dst2, len);
    // On several workers the joined tasks' slots may still be on their way
    // back (see tu_rt_quiesce): stop the runtime before counting leftovers.
    tu_rt_quiesce(rt, TU_WAIT_MS);
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0); // halves released
    free(src1);
    free(src2);
    free(dst1);
    free(dst2);
    tu_rt_free_clean(rt);
}

static void
test_io_split_halves_one_worker(void **state)
{
    (void)state;
    run_split(1);
}

static void
test_io_split_halves_three_workers(void **state)
{
    (void)state;
    run_split(3);
}

// ---------------------------------------------------------------------------
// Closing a tr_io while a task waits on it wakes the task with TR_ECLOSED;
// later operations fail the same way; the descriptor is closed.

typedef struct closer {
    int tr_pc;
    tr_io *io;
    tr_join waiter;
    tr_outcome o;
} closer;

static tr_poll
closer_poll(void *arg, tr_cx *cx)
{
    closer *st = arg;
    TR_BEGIN(st);
    TR_YIELD(st, cx); // the waiter registers first (FIFO worker)
    tr_io_close(st->io);
    TR_AWAIT(st, tr_join_poll(&st->waiter, cx, &st->o));
    TR_END(st);
}

static const tr_task_spec closer_spec = {
    .name = "closer", .poll = closer_poll, .size = sizeof(closer)};

static void
test_io_close_wakes_waiter(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    int fd = tr_io_fd(rd);
    char buf[4];
    reader rend = {0}, *r = &rend;
    closer c = {.io = rd};               // the closer's reference
    reader rinit = {.io = tr_io_ref(rd), // the waiter's own reference
                    .buf = buf,
                    .len = 4,
                    .close_when_done = true,
                    .snap = r};
    tu_start(rt, &reader_spec, &rinit, &c.waiter);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &closer_spec, NULL, &c, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    assert_int_equal(r->err, TR_ECLOSED);
    assert_int_equal(fcntl(fd, F_GETFD), -1); // closed (the number is free)
    assert_int_equal(errno, EBADF);
    tr_io_close(wr);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Registration slots are reused; events for a closed registration are
// dropped (a new one on the same slot sees no stale readiness it acts on).

typedef struct churn {
    int tr_pc;
    int i;
    tr_io *rd, *wr;
    char buf[8];
    size_t n;
    tr_err ioerr;
} churn;

static tr_poll
churn_poll(void *arg, tr_cx *cx)
{
    churn *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->i = 0; st->i < 2000; st->i++) {
        {
            int p[2];
            TU_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
            TU_CHECK(tr_io_open(rt, p[0], 0, &st->rd) == TR_OK);
            TU_CHECK(tr_io_open(rt, p[1], 0, &st->wr) == TR_OK);
        }
        // Make events, then close with them possibly still queued.
        TU_CHECK(write(tr_io_fd(st->wr), "x", 1) == 1);
        TR_AWAIT(st, tr_read(st->rd, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
        TU_CHECK(st->n == 1);
        if (st->i % 2 == 0) {
            TU_CHECK(write(tr_io_fd(st->wr), "yz", 2) == 2);
        }
        tr_io_close(st->wr);
        tr_io_close(st->rd);
    }
    TR_END(st);
}

static const tr_task_spec churn_spec = {.name = "churn", .poll = churn_poll, .size = sizeof(churn)};

static void
test_io_slot_reuse(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_rt_run(rt, &churn_spec, NULL, NULL, NULL), TR_OK);
    tu_checks_pass();
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    assert_true(rt->r_reactor->rx_nchunks == 1); // two slots, reused
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Custom readiness: an eventfd awaited with tr_io_poll_op.

static ssize_t
efd_read(int fd, void *arg)
{
    return read(fd, arg, sizeof(uint64_t));
}

typedef struct efd_task {
    int tr_pc;
    tr_io *io;
    uint64_t v;
    size_t n;
    tr_err ioerr;
    struct efd_task *snap; // the test's copy of the state at the end
} efd_task;

static tr_poll
efd_poll(void *arg, tr_cx *cx)
{
    efd_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, efd_read, &st->v, &st->n, &st->ioerr));
    *st->snap = *st;
    TR_END(st);
}

static const tr_task_spec efd_spec = {.name = "efd", .poll = efd_poll, .size = sizeof(efd_task)};

static void *
efd_thread(void *arg)
{
    late_writer *lw = arg;
    lw->timed_out =
        !TU_SPIN_UNTIL(atomic_load(&lw->rt->r_workers[0].w_park) == TR__PARK_DRIVER, TU_WAIT_MS);
    uint64_t v = 42;
    TU_CHECK(write(lw->fd, &v, sizeof v) == sizeof v);
    return NULL;
}

static void
test_io_poll_op_eventfd(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(fd >= 0);
    efd_task end = {0}, *t = &end;
    efd_task init = {.snap = &end};
    assert_int_equal(tr_io_open(rt, fd, 0, &init.io), TR_OK);
    late_writer lw = {.rt = rt, .fd = fd};
    pthread_t thr;
    tu_thread_start(&thr, efd_thread, &lw);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &efd_spec, NULL, &init, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_int_equal(t->n, 8);
    assert_int_equal(t->v, 42);
    tr_io_close(init.io);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// A borrowed blocking pipe stays blocking and is read after readiness (the
// one-shot path); a regular file is always ready.

static void
test_io_borrowed_blocking_pipe(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0); // blocking
    tr_io *rd, *wr;
    assert_int_equal(tr_io_open(rt, p[0], TR_IO_BORROW, &rd), TR_OK);
    assert_int_equal(tr_io_open(rt, p[1], TR_IO_BORROW, &wr), TR_OK);
    assert_false(fcntl(p[0], F_GETFL) & O_NONBLOCK);
    // 200 KB through a blocking pipe: the writer may only write what fits.
    run_transfer(rt, rd, wr, 200000, 10000, true);
    assert_false(fcntl(p[1], F_GETFL) & O_NONBLOCK);
    tr_io_close(rd);
    tr_io_close(wr);
    // Borrowed: still open, still ours to close.
    assert_int_equal(close(p[0]), 0);
    assert_int_equal(close(p[1]), 0);
    tu_rt_free_clean(rt);
}

static void
test_io_regular_file(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    char path[] = "/tmp/troupe_io_XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    assert_true(fd >= 0);
    unlink(path);
    tr_io *io;
    assert_int_equal(tr_io_open(rt, fd, 0, &io), TR_OK);
    size_t len = 100000;
    char *src = malloc(len), *dst = calloc(1, len);
    fill(src, len, 9);
    writer wend = {0}, *w = &wend;
    writer winit = {.io = io, .buf = src, .len = len, .chunk = 4096, .snap = w};
    assert_int_equal(tr_rt_run(rt, &writer_spec, NULL, &winit, NULL), TR_OK);
    assert_int_equal(w->err, TR_OK);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    reader rend = {0}, *r = &rend;
    reader rinit = {.io = io, .buf = dst, .len = len, .snap = r};
    assert_int_equal(tr_rt_run(rt, &reader_spec, NULL, &rinit, NULL), TR_OK);
    assert_int_equal(r->err, TR_OK);
    assert_memory_equal(src, dst, len);
    // At the end of the file: a short read is TR_EEOF.
    reader r2end = {0}, *r2 = &r2end;
    reader r2init = {.io = io, .buf = dst, .len = 10, .snap = r2};
    assert_int_equal(tr_rt_run(rt, &reader_spec, NULL, &r2init, NULL), TR_OK);
    assert_int_equal(r2->err, TR_EEOF);
    assert_int_equal(r2->got, 0);
    free(src);
    free(dst);
    tr_io_close(io);
    tu_rt_free_clean(rt);
}

static void
test_io_open_errors(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_io *io;
    assert_int_equal(tr_io_open(rt, -1, 0, &io), TR_EINVAL);
    assert_int_equal(tr_io_open(rt, 12345, 0, &io), TR_EBADF);
    assert_int_equal(tr_io_open(NULL, 0, 0, &io), TR_EINVAL);
    assert_int_equal(tr_io_open(rt, 0, 0x100, &io), TR_EINVAL);
    tu_rt_free_clean(rt);
}

// Descriptors nobody closed are closed by tr_rt_free (no leak).
static void
test_io_free_closes_leftovers(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    int fd = tr_io_fd(rd);
    tr_rt_free(rt);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
}

// ---------------------------------------------------------------------------
// Many socketpairs ping-ponging across several workers.

typedef struct pinger {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    uint32_t i, rounds;
    uint32_t v, got;
    tr_err err;
    bool first;
} pinger;

static tr_poll
pinger_poll(void *arg, tr_cx *cx)
{
    pinger *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->rounds; st->i++) {
        if (st->first) {
            st->v = st->i;
            TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, &st->v, sizeof st->v, NULL, &st->err));
            TU_CHECK(st->err == TR_OK);
        }
        TR_AWAIT(st, tr_read_exact(st->io, cx, &st->op, &st->got, sizeof st->got, NULL, &st->err));
        TU_CHECK(st->err == TR_OK);
        TU_CHECK(st->got == st->i);
        if (!st->first) {
            st->v = st->got;
            TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, &st->v, sizeof st->v, NULL, &st->err));
            TU_CHECK(st->err == TR_OK);
        }
    }
    TR_END(st);
}

static void
pinger_drop(void *arg)
{
    pinger *st = arg;
    tr_io_close(st->io);
}

static const tr_task_spec pinger_spec = {
    .name = "pinger", .poll = pinger_poll, .drop = pinger_drop, .size = sizeof(pinger)};

typedef struct ping_root {
    int tr_pc;
    tr_join *js;
    unsigned n, i;
    tr_outcome o;
} ping_root;

static tr_poll
ping_root_poll(void *arg, tr_cx *cx)
{
    ping_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->js[st->i], cx, &st->o));
        TU_CHECK(st->o.err == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec ping_root_spec = {
    .name = "ping_root", .poll = ping_root_poll, .size = sizeof(ping_root)};

static void
run_ping(unsigned workers, tr_sched_kind sched)
{
    tr_rt *rt = rt_workers(workers, sched);
    unsigned pairs = 64;
    tr_join *js = calloc(2 * pairs, sizeof(tr_join));
    for (unsigned p = 0; p < pairs; p++) {
        tr_io *a, *b;
        make_pair(rt, &a, &b);
        for (int k = 0; k < 2; k++) {
            tu_start(rt, &pinger_spec,
                     &(pinger){.io = k == 0 ? a : b, .rounds = 300, .first = k == 0},
                     &js[2 * p + (unsigned)k]);
        }
    }
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
    assert_int_equal(
        tr_rt_run(rt, &ping_root_spec, NULL, &(ping_root){.js = js, .n = 2 * pairs}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    tu_rt_quiesce(rt, TU_WAIT_MS); // several workers: as in run_split
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    free(js);
    tu_rt_free_clean(rt);
}

static void
test_io_ping_pong_one_worker(void **state)
{
    (void)state;
    run_ping(1, TR_SCHED_RR);
}

static void
test_io_ping_pong_ws_four_workers(void **state)
{
    (void)state;
    run_ping(4, TR_SCHED_WS);
}

static void
test_io_ping_pong_rr_three_workers(void **state)
{
    (void)state;
    run_ping(3, TR_SCHED_RR);
}

static void
test_io_ping_pong_hybrid_two_workers(void **state)
{
    (void)state;
    run_ping(2, TR_SCHED_HYBRID);
}

// ---------------------------------------------------------------------------
// Close while a system call is in flight on another worker: the descriptor
// stays open (its number cannot be reused under the call) until the call
// returns, and the call's thread closes it then.

typedef struct inflight {
    sem_t entered, release;
    int fd_seen;
    bool timed_out;
} inflight;

static ssize_t
slow_call(int fd, void *arg)
{
    inflight *f = arg;
    f->fd_seen = fd;
    sem_post(&f->entered);
    if (!tu_sem_wait_ms(&f->release, TU_WAIT_MS)) {
        f->timed_out = true;
    }
    return 7; // "ready": as a read of 7 bytes would be
}

typedef struct slow_task {
    int tr_pc;
    tr_io *io;
    inflight *f;
    size_t n;
    tr_err ioerr;
} slow_task;

static tr_poll
slow_poll(void *arg, tr_cx *cx)
{
    slow_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, slow_call, st->f, &st->n, &st->ioerr));
    tr_cx_set_result_u64(cx, st->n);
    TR_END(st);
}

static void
slow_drop(void *arg)
{
    slow_task *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec slow_spec = {
    .name = "slow", .poll = slow_poll, .drop = slow_drop, .size = sizeof(slow_task)};

static void
test_io_close_deferred_while_in_flight(void **state)
{
    (void)state;
    tr_rt *rt = rt_workers(2, TR_SCHED_WS); // worker 1 runs the task
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    int fd = tr_io_fd(rd);
    inflight f;
    memset(&f, 0, sizeof f);
    sem_init(&f.entered, 0, 0);
    sem_init(&f.release, 0, 0);
    tr_join j;
    // From outside: worker 1 picks it up.
    tu_start(rt, &slow_spec, &(slow_task){.io = tr_io_ref(rd), .f = &f}, &j);
    assert_true(tu_sem_wait_ms(&f.entered, TU_WAIT_MS));
    assert_int_equal(f.fd_seen, fd);
    tr_io_close(rd); // the call is in flight: the close must wait for it
    assert_true(fcntl(fd, F_GETFD) >= 0);
    sem_post(&f.release);
    tr_outcome o;
    assert_int_equal(tr_join_wait(&j, &o), TR_OK);
    assert_false(f.timed_out);
    assert_int_equal(o.value.u64, 7);
    assert_int_equal(fcntl(fd, F_GETFD), -1); // closed by the call's thread
    assert_int_equal(errno, EBADF);
    tr_io_close(wr);
    sem_destroy(&f.entered);
    sem_destroy(&f.release);
    // Worker 1 frees the task's slot after the join completed: let it
    // finish.
    tu_rt_quiesce(rt, TU_WAIT_MS);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Op reuse: a tr_io_op is back to its zeroed state when tr_write_all or
// tr_read_exact returns TR_READY, so the next call on the same op does its
// whole work. The second buffer is the shorter one (a count left over from
// the first call would make the second return at once) and both are larger
// than a socket's buffer, so each call waits for its peer half way.

#define REUSE_A ((size_t)1 << 20)
#define REUSE_B ((size_t)3 << 18)

typedef struct reuse_bufs {
    char *src_a, *src_b, *dst_a, *dst_b;
    size_t wrote_a, wrote_b; // the writer's counts
    tr_err werr_a, werr_b;
} reuse_bufs;

typedef struct reuse_writer {
    int tr_pc;
    tr_io *io;
    reuse_bufs *b;
    tr_io_op op;
} reuse_writer;

static tr_poll
reuse_writer_poll(void *arg, tr_cx *cx)
{
    reuse_writer *st = arg;
    reuse_bufs *b = st->b;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, b->src_a, REUSE_A, &b->wrote_a, &b->werr_a));
    TR_AWAIT(st, tr_write_all(st->io, cx, &st->op, b->src_b, REUSE_B, &b->wrote_b, &b->werr_b));
    TR_END(st);
}

static void
reuse_writer_drop(void *arg)
{
    reuse_writer *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec reuse_writer_spec = {.name = "reuse_writer",
                                               .poll = reuse_writer_poll,
                                               .drop = reuse_writer_drop,
                                               .size = sizeof(reuse_writer)};

typedef struct reuse_main {
    int tr_pc;
    reuse_bufs *b;
    tr_io *x, *y;
    tr_join wj;
    tr_outcome wo;
    tr_io_op op;
    size_t n;
    tr_err err;
} reuse_main;

static tr_poll
reuse_main_poll(void *arg, tr_cx *cx)
{
    reuse_main *st = arg;
    reuse_bufs *b = st->b;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_unix_pair(tr_cx_rt(cx), SOCK_STREAM, &st->x, &st->y), TR_OK);
    st->wj = tu_spawn(cx, &reuse_writer_spec, &(reuse_writer){.io = st->x, .b = b});
    st->x = NULL; // the writer's now
    TR_AWAIT(st, tr_read_exact(st->y, cx, &st->op, b->dst_a, REUSE_A, &st->n, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_EQ(st, st->n, REUSE_A);
    TR_AWAIT(st, tr_read_exact(st->y, cx, &st->op, b->dst_b, REUSE_B, &st->n, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_EQ(st, st->n, REUSE_B);
    TR_AWAIT(st, tr_join_poll(&st->wj, cx, &st->wo));
    CHECK_ERR(st, st->wo.err, TR_OK);
    TR_END(st);
}

static void
reuse_main_drop(void *arg)
{
    reuse_main *st = arg;
    tr_join_release(&st->wj);
    tr_io_release(st->x);
    tr_io_release(st->y);
}

static const tr_task_spec reuse_main_spec = {.name = "reuse_main",
                                             .poll = reuse_main_poll,
                                             .drop = reuse_main_drop,
                                             .size = sizeof(reuse_main)};

static void
test_io_op_reuse(void **state)
{
    (void)state;
    reuse_bufs b = {.src_a = malloc(REUSE_A),
                    .src_b = malloc(REUSE_B),
                    .dst_a = calloc(1, REUSE_A),
                    .dst_b = calloc(1, REUSE_B)};
    fill(b.src_a, REUSE_A, 1);
    fill(b.src_b, REUSE_B, 2);
    tu_run_main(1, &reuse_main_spec, &(reuse_main){.b = &b});
    assert_int_equal(b.werr_a, TR_OK);
    assert_int_equal(b.werr_b, TR_OK);
    assert_int_equal(b.wrote_a, REUSE_A);
    assert_int_equal(b.wrote_b, REUSE_B);
    assert_memory_equal(b.src_a, b.dst_a, REUSE_A);
    assert_memory_equal(b.src_b, b.dst_b, REUSE_B);
    free(b.src_a);
    free(b.src_b);
    free(b.dst_a);
    free(b.dst_b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_pipe_transfer),
        cmocka_unit_test(test_io_edge_before_wait),
        cmocka_unit_test(test_io_wake_parked_driver),
        cmocka_unit_test(test_io_split_halves_one_worker),
        cmocka_unit_test(test_io_split_halves_three_workers),
        cmocka_unit_test(test_io_close_wakes_waiter),
        cmocka_unit_test(test_io_slot_reuse),
        cmocka_unit_test(test_io_poll_op_eventfd),
        cmocka_unit_test(test_io_borrowed_blocking_pipe),
        cmocka_unit_test(test_io_regular_file),
        cmocka_unit_test(test_io_open_errors),
        cmocka_unit_test(test_io_free_closes_leftovers),
        cmocka_unit_test(test_io_close_deferred_while_in_flight),
        cmocka_unit_test(test_io_ping_pong_one_worker),
        cmocka_unit_test(test_io_ping_pong_ws_four_workers),
        cmocka_unit_test(test_io_ping_pong_rr_three_workers),
        cmocka_unit_test(test_io_ping_pong_hybrid_two_workers),
        cmocka_unit_test(test_io_op_reuse),
    };
    return tu_run(tests);
}
