// Tests for mailboxes and messages (troupe/mailbox.h): order per lane and
// the system lane first, take batches, the bound (try_push, push ignoring
// it, the awaitable send with its FIFO of waiting senders, cancellation),
// the empty mark (exactly one wake per mark, pushes racing on both lanes,
// the window of a push), fini, stress with many producers, and the message
// slabs (every class, large messages, frees on other threads, a thread's
// cache returned at its exit, trim).
//
// Nothing sleeps: threads meet at barriers and semaphores, wait on futexes
// and semaphores with deadlines (TU_WAIT_MS), and tasks yield until a
// condition holds, bounded by time (TU_YIELD_UNTIL). The runtime tests run
// on a one-worker FIFO runtime when they assert an order of service, so a
// task spawned by the root runs only when the root yields.
#include "../test_util.h"

#include <troupe/mailbox.h>

#include "task/task.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif

// scaled picks an iteration count: the stress tests run 10^6 messages per
// producer natively (and under ASan, whose atomics cost what they do
// natively), a fifth of that under ThreadSanitizer (which tracks every
// atomic and every message handed between threads) and a fiftieth under
// valgrind (which runs one thread at a time), so that the suite stays
// within its ctest timeout on a loaded 2-core machine.
static uint32_t
scaled(uint32_t plain, uint32_t tsan, uint32_t vg)
{
    if (RUNNING_ON_VALGRIND) {
        return vg;
    }
#ifdef TU_TSAN
    (void)plain;
    return tsan;
#else
    (void)tsan;
    return plain;
#endif
}

// ---------------------------------------------------------------------------
// Helpers.

// A test message: which producer sent it, and its sequence number there.
typedef struct tmsg {
    tr_msg hdr;
    uint32_t producer;
    uint32_t seq;
} tmsg;

_Static_assert(sizeof(tmsg) == 32, "a test message is one 32-byte object");

static tr_msg *
msg_new(uint32_t producer, uint32_t seq)
{
    tmsg *t = (tmsg *)(void *)tr_msg_alloc(sizeof *t);
    t->producer = producer;
    t->seq = seq;
    return &t->hdr;
}

static const tmsg *
as_tmsg(const tr_msg *m)
{
    return (const tmsg *)(const void *)m;
}

// A waker that counts its wakes (and posts a semaphore when one is given).
typedef struct cwaker {
    atomic_int wakes;
    sem_t *sem; // may be NULL
} cwaker;

static void
cwaker_wake(const tr_waker *w)
{
    cwaker *c = (cwaker *)(uintptr_t)w->data;
    atomic_fetch_add(&c->wakes, 1);
    if (c->sem != NULL) {
        sem_post(c->sem);
    }
}

static const tr_waker_ops cwaker_ops = {.wake = cwaker_wake};

static tr_waker
cwaker_of(cwaker *c)
{
    return (tr_waker){&cwaker_ops, c};
}

static int
sem_value(sem_t *s)
{
    int v = -1;
    sem_getvalue(s, &v);
    return v;
}

// drain pops every message (all pushes have returned), frees them and
// returns how many there were.
static size_t
drain(tr_mailbox *mb)
{
    size_t n = 0;
    tr_msg *m;
    while ((m = tr_mailbox_pop(mb)) != NULL) {
        tr_msg_free(m);
        n++;
    }
    return n;
}

// The push's window, replayed (white box): the first half of a push (the
// exchange on the lane's head), and later its second half (the link).
static uintptr_t
half_push(_Atomic(uintptr_t) *head, tr_msg *m)
{
    atomic_store(&m->m_link.l_next, NULL);
    return atomic_exchange(head, (uintptr_t)&m->m_link);
}

static void
finish_push(uintptr_t prev, tr_msg *m)
{
    tr_msg_link *p = (tr_msg_link *)(prev & ~(uintptr_t)1);
    atomic_store(&p->l_next, &m->m_link);
}

// ---------------------------------------------------------------------------
// Order, lanes, take, bound, fini (one thread).

// tr_msg_free(NULL) is a no-op, as free(NULL) is (callers free replies
// that an error left NULL).
static void
test_msg_free_null(void **state)
{
    (void)state;
    tr_msg_free(NULL);
    tr_msg *m = tr_msg_alloc(8);
    assert_non_null(m);
    tr_msg_free(m);
}

static void
test_mailbox_fifo_per_producer(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    for (uint32_t i = 0; i < 100; i++) {
        assert_false(tr_mailbox_push(&mb, msg_new(1, i)));
        assert_int_equal(tr_mailbox_len(&mb), i + 1);
    }
    for (uint32_t i = 0; i < 100; i++) {
        tr_msg *m = tr_mailbox_pop(&mb);
        assert_non_null(m);
        assert_int_equal(as_tmsg(m)->producer, 1);
        assert_int_equal(as_tmsg(m)->seq, i);
        tr_msg_free(m);
        assert_int_equal(tr_mailbox_len(&mb), 99 - i);
    }
    assert_null(tr_mailbox_pop(&mb));
    tr_mailbox_fini(&mb, NULL, NULL);
}

// tr_mailbox_set_waker records the consumer's waker before any markempty,
// tr_mailbox_wake_consumer calls it (nothing before one is recorded), and a
// markempty with the same waker keeps it; on a 32-byte boundary, as an
// actor's mailbox may be, the mailbox works the same.
static void
test_mailbox_consumer_waker(void **state)
{
    (void)state;
    _Alignas(64) unsigned char buf[32 + sizeof(tr_mailbox)];
    tr_mailbox *mb = (tr_mailbox *)(void *)(buf + 32);
    tr_mailbox_init(mb, 0);
    cwaker c = {0};
    tr_mailbox_wake_consumer(mb); // none recorded: nothing
    tr_mailbox_set_waker(mb, cwaker_of(&c));
    assert_int_equal(atomic_load(&c.wakes), 0);
    tr_mailbox_wake_consumer(mb);
    assert_int_equal(atomic_load(&c.wakes), 1);
    assert_true(tr_mailbox_markempty(mb, cwaker_of(&c)));
    assert_true(tr_mailbox_push(mb, msg_new(1, 0))); // took the mark: woke
    assert_int_equal(atomic_load(&c.wakes), 2);
    tr_msg *m = tr_mailbox_pop(mb);
    assert_non_null(m);
    tr_msg_free(m);
    tr_mailbox_wake_consumer(mb);
    assert_int_equal(atomic_load(&c.wakes), 3);
    tr_mailbox_fini(mb, NULL, NULL);
}

static void
test_mailbox_system_lane_first(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    tr_mailbox_push(&mb, msg_new(0, 0));
    tr_mailbox_push(&mb, msg_new(0, 1));
    tr_mailbox_push_system(&mb, msg_new(1, 0));
    tr_mailbox_push(&mb, msg_new(0, 2));
    tr_mailbox_push_system(&mb, msg_new(1, 1));
    // System messages do not count in the user lane.
    assert_int_equal(tr_mailbox_len(&mb), 3);
    static const uint32_t want[5][2] = {{1, 0}, {1, 1}, {0, 0}, {0, 1}, {0, 2}};
    for (int i = 0; i < 5; i++) {
        tr_msg *m = tr_mailbox_pop(&mb);
        assert_non_null(m);
        assert_int_equal(as_tmsg(m)->producer, want[i][0]);
        assert_int_equal(as_tmsg(m)->seq, want[i][1]);
        tr_msg_free(m);
        if (i == 1) {
            // A system message pushed now still jumps the user lane.
            tr_mailbox_push_system(&mb, msg_new(2, 0));
            m = tr_mailbox_pop(&mb);
            assert_int_equal(as_tmsg(m)->producer, 2);
            tr_msg_free(m);
        }
    }
    assert_null(tr_mailbox_pop(&mb));
    tr_mailbox_fini(&mb, NULL, NULL);
}

static void
test_mailbox_take_batches(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    for (uint32_t i = 0; i < 10; i++) {
        tr_mailbox_push(&mb, msg_new(0, i));
    }
    for (uint32_t i = 0; i < 3; i++) {
        tr_mailbox_push_system(&mb, msg_new(1, i));
    }
    tr_msg *out[100];
    // System lane first, then the user lane, each in order.
    assert_int_equal(tr_mailbox_take(&mb, out, 4), 4);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(as_tmsg(out[i])->producer, 1);
        assert_int_equal(as_tmsg(out[i])->seq, i);
    }
    assert_int_equal(as_tmsg(out[3])->producer, 0);
    assert_int_equal(as_tmsg(out[3])->seq, 0);
    assert_int_equal(tr_mailbox_len(&mb), 9);
    for (int i = 0; i < 4; i++) {
        tr_msg_free(out[i]);
    }
    assert_int_equal(tr_mailbox_take(&mb, out, 4), 4);
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(as_tmsg(out[i])->seq, i + 1);
        tr_msg_free(out[i]);
    }
    assert_int_equal(tr_mailbox_take(&mb, out, 0), 0);
    assert_int_equal(tr_mailbox_take(&mb, out, 100), 5);
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(as_tmsg(out[i])->seq, i + 5);
        tr_msg_free(out[i]);
    }
    assert_int_equal(tr_mailbox_len(&mb), 0);
    assert_int_equal(tr_mailbox_take(&mb, out, 100), 0);
    tr_mailbox_fini(&mb, NULL, NULL);
}

static void
test_mailbox_try_push_bound(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 3);
    bool woke = true;
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(tr_mailbox_try_push(&mb, msg_new(0, i), &woke), TR_OK);
        assert_false(woke);
    }
    // Full: the caller keeps the message.
    tr_msg *m = msg_new(0, 99);
    woke = true;
    assert_int_equal(tr_mailbox_try_push(&mb, m, &woke), TR_EAGAIN);
    assert_false(woke);
    assert_int_equal(tr_mailbox_try_push(&mb, m, NULL), TR_EAGAIN);
    // push ignores the bound, and so does the system lane.
    assert_false(tr_mailbox_push(&mb, msg_new(0, 3)));
    assert_int_equal(tr_mailbox_len(&mb), 4);
    for (uint32_t i = 0; i < 5; i++) {
        tr_mailbox_push_system(&mb, msg_new(1, i));
    }
    assert_int_equal(tr_mailbox_len(&mb), 4);
    // The system lane, then one user message.
    for (uint32_t i = 0; i < 6; i++) {
        tr_msg *x = tr_mailbox_pop(&mb);
        assert_int_equal(as_tmsg(x)->producer, i < 5 ? 1 : 0);
        assert_int_equal(as_tmsg(x)->seq, i < 5 ? i : 0);
        tr_msg_free(x);
    }
    assert_int_equal(tr_mailbox_len(&mb), 3);
    assert_int_equal(tr_mailbox_try_push(&mb, m, NULL), TR_EAGAIN); // 3 of 3
    tr_msg *first = tr_mailbox_pop(&mb);
    assert_int_equal(as_tmsg(first)->seq, 1);
    tr_msg_free(first);
    assert_int_equal(tr_mailbox_try_push(&mb, m, NULL), TR_OK); // 2 of 3: room
    assert_int_equal(tr_mailbox_len(&mb), 3);
    static const uint32_t want[3] = {2, 3, 99};
    for (int i = 0; i < 3; i++) {
        tr_msg *x = tr_mailbox_pop(&mb);
        assert_int_equal(as_tmsg(x)->seq, want[i]);
        tr_msg_free(x);
    }
    tr_mailbox_fini(&mb, NULL, NULL);
}

typedef struct drop_log {
    uint32_t n;
    uint32_t producer[16];
    uint32_t seq[16];
} drop_log;

static void
drop_count(tr_msg *m, void *arg)
{
    drop_log *log = arg;
    if (log->n < 16) {
        log->producer[log->n] = as_tmsg(m)->producer;
        log->seq[log->n] = as_tmsg(m)->seq;
    }
    log->n++;
    tr_msg_free(m);
}

static void
test_mailbox_fini_drops_remaining(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 4);
    for (uint32_t i = 0; i < 5; i++) {
        tr_mailbox_push(&mb, msg_new(0, i));
    }
    tr_mailbox_push_system(&mb, msg_new(1, 0));
    tr_mailbox_push_system(&mb, msg_new(1, 1));
    drop_log log = {0};
    tr_mailbox_fini(&mb, drop_count, &log);
    assert_int_equal(log.n, 7);
    static const uint32_t want[7][2] = {{1, 0}, {1, 1}, {0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(log.producer[i], want[i][0]);
        assert_int_equal(log.seq[i], want[i][1]);
    }
    // Again, with the default drop (tr_msg_free; LeakSanitizer checks it),
    // and a caller-owned message among them, which it leaves alone.
    tr_mailbox_init(&mb, 0);
    tmsg mine;
    tr_msg_init(&mine.hdr, NULL);
    mine.seq = 7;
    tr_mailbox_push(&mb, msg_new(0, 0));
    tr_mailbox_push(&mb, &mine.hdr);
    tr_mailbox_push_system(&mb, msg_new(1, 0));
    tr_mailbox_fini(&mb, NULL, NULL);
    assert_int_equal(mine.seq, 7);
}

static void
test_msg_caller_owned(void **state)
{
    (void)state;
    tmsg a, b;
    memset(&a, 0xa5, sizeof a); // tr_msg_init sets every field of the header
    memset(&b, 0, sizeof b);    // a zeroed header is caller-owned too
    tr_msg_init(&a.hdr, &a);
    assert_int_equal(a.hdr.m_class, TR_MSG_CLASS_NONE);
    assert_ptr_equal(a.hdr.m_type, &a);
    a.seq = 1;
    b.seq = 2;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    tr_mailbox_push(&mb, &a.hdr);
    tr_mailbox_push_system(&mb, &b.hdr);
    assert_ptr_equal(tr_mailbox_pop(&mb), &b.hdr);
    assert_ptr_equal(tr_mailbox_pop(&mb), &a.hdr);
    tr_msg_free(&a.hdr); // a no-op: the memory is ours
    tr_msg_free(&b.hdr);
    assert_int_equal(a.seq + b.seq, 3);
    tr_mailbox_fini(&mb, NULL, NULL);
}

// A message of a class of its own: it remembers its block's class and
// counts the frees its class's function made.
typedef struct owned_msg {
    tr_msg hdr;
    uint32_t block_class;
} owned_msg;

static atomic_int owned_frees;

static void
owned_free(tr_msg *m)
{
    owned_msg *o = (owned_msg *)(void *)m;
    atomic_fetch_add(&owned_frees, 1);
    m->m_class = o->block_class;
    tr_msg_free(m);
}

static void
test_msg_class_register(void **state)
{
    (void)state;
    assert_int_equal(tr_msg_class_register(NULL), 0);
    uint32_t cls = tr_msg_class_register(owned_free);
    assert_true(cls >= TR_MSG_CLASS_USER && cls < TR_MSG_CLASS_USER + TR_MSG_CLASS_USER_MAX);
    assert_true(cls > TR__MSG_CLASS_LARGE);
    // A slab message and a large one, freed directly and by a mailbox's fini.
    size_t sizes[] = {sizeof(owned_msg), TR_MSG_SMALL_MAX + 1};
    for (size_t i = 0; i < 2; i++) {
        atomic_store(&owned_frees, 0);
        owned_msg *a = (owned_msg *)(void *)tr_msg_alloc(sizes[i]);
        owned_msg *b = (owned_msg *)(void *)tr_msg_alloc(sizes[i]);
        a->block_class = a->hdr.m_class;
        b->block_class = b->hdr.m_class;
        a->hdr.m_class = cls;
        b->hdr.m_class = cls;
        tr_msg_free(&a->hdr);
        assert_int_equal(atomic_load(&owned_frees), 1);
        _Alignas(64) tr_mailbox mb;
        tr_mailbox_init(&mb, 0);
        tr_mailbox_push(&mb, &b->hdr);
        tr_mailbox_fini(&mb, NULL, NULL); // LeakSanitizer checks both blocks
        assert_int_equal(atomic_load(&owned_frees), 2);
    }
    assert_int_equal(tr__msg_large_live(), 0);
    // Every registration is a new class, until the table is full.
    uint32_t seen[TR_MSG_CLASS_USER_MAX] = {cls};
    size_t n = 1;
    for (;;) {
        uint32_t c = tr_msg_class_register(owned_free);
        if (c == 0) {
            break;
        }
        assert_true(n < TR_MSG_CLASS_USER_MAX);
        for (size_t k = 0; k < n; k++) {
            assert_int_not_equal(seen[k], c);
        }
        seen[n++] = c;
    }
    assert_int_equal(n, TR_MSG_CLASS_USER_MAX);
    assert_int_equal(tr_msg_class_register(owned_free), 0);
}

// ---------------------------------------------------------------------------
// The empty mark (one thread).

static void
test_mailbox_markempty_wakes_once(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    cwaker c = {0}, c2 = {0};
    tr_waker w = cwaker_of(&c);
    assert_true(tr_mailbox_markempty(&mb, w));
    assert_true(tr_mailbox_markempty(&mb, w)); // still marked
    assert_int_equal(atomic_load(&c.wakes), 0);
    // The first push wakes, the next ones do not.
    assert_true(tr_mailbox_push(&mb, msg_new(0, 0)));
    assert_int_equal(atomic_load(&c.wakes), 1);
    assert_false(tr_mailbox_push(&mb, msg_new(0, 1)));
    assert_false(tr_mailbox_push_system(&mb, msg_new(1, 0)));
    assert_int_equal(atomic_load(&c.wakes), 1);
    // Not empty: no mark.
    assert_false(tr_mailbox_markempty(&mb, w));
    assert_false(tr_mailbox_push(&mb, msg_new(0, 2)));
    assert_int_equal(drain(&mb), 4);
    // A system push takes the mark too, once.
    assert_true(tr_mailbox_markempty(&mb, w));
    assert_true(tr_mailbox_push_system(&mb, msg_new(1, 1)));
    assert_false(tr_mailbox_push_system(&mb, msg_new(1, 2)));
    assert_false(tr_mailbox_push(&mb, msg_new(0, 3)));
    assert_int_equal(atomic_load(&c.wakes), 2);
    assert_int_equal(drain(&mb), 3);
    // try_push reports the wake.
    bool woke = false;
    assert_true(tr_mailbox_markempty(&mb, w));
    assert_int_equal(tr_mailbox_try_push(&mb, msg_new(0, 4), &woke), TR_OK);
    assert_true(woke);
    assert_int_equal(atomic_load(&c.wakes), 3);
    assert_int_equal(drain(&mb), 1);
    // Marked again for another waker: the new one is woken, the old not.
    assert_true(tr_mailbox_markempty(&mb, w));
    assert_true(tr_mailbox_markempty(&mb, cwaker_of(&c2)));
    assert_true(tr_mailbox_push(&mb, msg_new(0, 5)));
    assert_int_equal(atomic_load(&c.wakes), 3);
    assert_int_equal(atomic_load(&c2.wakes), 1);
    assert_int_equal(drain(&mb), 1);
    // Many cycles.
    for (uint32_t i = 0; i < 1000; i++) {
        assert_true(tr_mailbox_markempty(&mb, w));
        bool sys = (i % 3) == 0;
        assert_true(sys ? tr_mailbox_push_system(&mb, msg_new(1, i))
                        : tr_mailbox_push(&mb, msg_new(0, i)));
        assert_false(tr_mailbox_push(&mb, msg_new(0, i)));
        assert_int_equal(drain(&mb), 2);
    }
    assert_int_equal(atomic_load(&c.wakes), 1003);
    tr_mailbox_fini(&mb, NULL, NULL);
}

// The window of a push, replayed by hand: a producer that has swapped the
// head but not linked yet hides its message (and any behind it), pop returns
// NULL instead of waiting, markempty refuses, and the link brings it all.
static void
test_mailbox_push_window(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    cwaker c = {0};
    tr_waker w = cwaker_of(&c);

    // User lane, empty: the first push in its window.
    tr_msg *a = msg_new(0, 0);
    atomic_fetch_add(&mb.mb_len, 1);
    uintptr_t prev = half_push(&mb.mb_head, a);
    assert_null(tr_mailbox_pop(&mb));
    assert_false(tr_mailbox_markempty(&mb, w));
    finish_push(prev, a);
    assert_ptr_equal(tr_mailbox_pop(&mb), a);
    tr_msg_free(a);

    // A linked message is held back while the push behind it is in its window.
    a = msg_new(0, 1);
    tr_msg *b = msg_new(0, 2);
    tr_mailbox_push(&mb, a);
    atomic_fetch_add(&mb.mb_len, 1);
    prev = half_push(&mb.mb_head, b);
    assert_null(tr_mailbox_pop(&mb));
    assert_false(tr_mailbox_markempty(&mb, w));
    tr_mailbox_push(&mb, msg_new(0, 3)); // behind b: hidden too
    assert_null(tr_mailbox_pop(&mb));
    finish_push(prev, b);
    assert_ptr_equal(tr_mailbox_pop(&mb), a);
    assert_ptr_equal(tr_mailbox_pop(&mb), b);
    tr_msg_free(a);
    tr_msg_free(b);
    assert_int_equal(drain(&mb), 1);

    // The system lane in its window: user messages still come; no mark.
    tr_msg *s = msg_new(1, 0);
    prev = half_push(&mb.mb_sys_head, s);
    tr_mailbox_push(&mb, msg_new(0, 4));
    tr_msg *u = tr_mailbox_pop(&mb);
    assert_int_equal(as_tmsg(u)->seq, 4);
    tr_msg_free(u);
    assert_null(tr_mailbox_pop(&mb));
    assert_false(tr_mailbox_markempty(&mb, w));
    finish_push(prev, s);
    assert_ptr_equal(tr_mailbox_pop(&mb), s);
    tr_msg_free(s);

    // Canonically empty again: marks, and nobody was woken meanwhile.
    assert_true(tr_mailbox_markempty(&mb, w));
    assert_int_equal(atomic_load(&c.wakes), 0);
    assert_true(tr_mailbox_push(&mb, msg_new(0, 5)));
    assert_int_equal(atomic_load(&c.wakes), 1);
    assert_int_equal(tr_mailbox_len(&mb), 1);
    tr_mailbox_fini(&mb, NULL, NULL);
}

// The Dekker pair, replayed in each order with the test hook between
// markempty's mark and its re-check of the system lane: a push that lands
// there takes the mark itself (a user push, or a system push that sees the
// mark: one wake, markempty true), or is a system push still before its look
// at the user head, which markempty sees and withdraws the mark for (no
// wake, markempty false, and the push then finds no mark).
enum { LAND_USER, LAND_SYSTEM, LAND_SYSTEM_HALF };

static struct {
    tr_mailbox *mb;
    int what;
    bool woke;
    tr_msg *m;
    uintptr_t prev;
} land;

static void
land_hook(int point)
{
    if (point != TR__HOOK_MAILBOX_MARKED || land.mb == NULL) {
        return;
    }
    land.m = msg_new(7, (uint32_t)land.what);
    switch (land.what) {
    case LAND_USER:
        land.woke = tr_mailbox_push(land.mb, land.m);
        break;
    case LAND_SYSTEM:
        land.woke = tr_mailbox_push_system(land.mb, land.m);
        break;
    default:
        land.prev = half_push(&land.mb->mb_sys_head, land.m);
        break;
    }
    land.mb = NULL; // once
}

static void
test_mailbox_markempty_race_replayed(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    cwaker c = {0};
    atomic_store(&tr__test_hook, land_hook);
    for (int what = LAND_USER; what <= LAND_SYSTEM_HALF; what++) {
        memset(&land, 0, sizeof land);
        land.mb = &mb;
        land.what = what;
        int wakes = atomic_load(&c.wakes);
        bool marked = tr_mailbox_markempty(&mb, cwaker_of(&c));
        if (what == LAND_SYSTEM_HALF) {
            // The rest of that system push: it looks for the mark (gone,
            // withdrawn by markempty), then links.
            assert_false(marked);
            assert_int_equal(atomic_load(&mb.mb_head) & 1, 0);
            finish_push(land.prev, land.m);
            assert_int_equal(atomic_load(&c.wakes), wakes);
        } else {
            assert_true(marked);
            assert_true(land.woke);
            assert_int_equal(atomic_load(&c.wakes), wakes + 1);
        }
        tr_msg *m = tr_mailbox_pop(&mb);
        assert_ptr_equal(m, land.m);
        tr_msg_free(m);
        assert_null(tr_mailbox_pop(&mb));
    }
    atomic_store(&tr__test_hook, NULL);
    assert_int_equal(atomic_load(&c.wakes), 2);
    tr_mailbox_fini(&mb, NULL, NULL);
}

// ---------------------------------------------------------------------------
// Exactly one wake per mark, with pushes racing on both lanes.

#define RACE_THREADS 4

typedef struct race {
    _Alignas(64) tr_mailbox mb;
    pthread_barrier_t start;
    pthread_barrier_t done;
    uint32_t cycles;
    atomic_int push_woke; // pushes that returned true
    pthread_t thr[RACE_THREADS];
} race;

typedef struct race_arg {
    race *r;
    uint32_t id;
} race_arg;

static void *
race_pusher(void *arg)
{
    race_arg *a = arg;
    race *r = a->r;
    for (uint32_t c = 0; c < r->cycles; c++) {
        pthread_barrier_wait(&r->start);
        tr_msg *m = msg_new(a->id, c);
        bool sys = ((a->id + c) & 1) != 0;
        if (sys ? tr_mailbox_push_system(&r->mb, m) : tr_mailbox_push(&r->mb, m)) {
            atomic_fetch_add(&r->push_woke, 1);
        }
        pthread_barrier_wait(&r->done);
    }
    return NULL;
}

static void
race_start(race *r, race_arg *args, uint32_t cycles)
{
    tr_mailbox_init(&r->mb, 0);
    r->cycles = cycles;
    atomic_init(&r->push_woke, 0);
    assert_int_equal(pthread_barrier_init(&r->start, NULL, RACE_THREADS + 1), 0);
    assert_int_equal(pthread_barrier_init(&r->done, NULL, RACE_THREADS + 1), 0);
    for (uint32_t i = 0; i < RACE_THREADS; i++) {
        args[i].r = r;
        args[i].id = i;
        tu_thread_start(&r->thr[i], race_pusher, &args[i]);
    }
}

static void
race_stop(race *r)
{
    for (uint32_t i = 0; i < RACE_THREADS; i++) {
        tu_thread_join(r->thr[i]);
    }
    pthread_barrier_destroy(&r->start);
    pthread_barrier_destroy(&r->done);
    drain(&r->mb);
    tr_mailbox_fini(&r->mb, NULL, NULL);
}

// Mark, then RACE_THREADS pushes at once (lanes mixed): one wake, one push
// that says so.
static void
test_mailbox_wake_once_racing_pushes(void **state)
{
    (void)state;
    static race r;
    race_arg args[RACE_THREADS];
    uint32_t cycles = scaled(2000, 1000, 200);
    race_start(&r, args, cycles);
    cwaker c = {0};
    for (uint32_t i = 0; i < cycles; i++) {
        TU_CHECK(tr_mailbox_markempty(&r.mb, cwaker_of(&c)));
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.done);
        TU_CHECK(atomic_load(&c.wakes) == (int)i + 1);
        TU_CHECK(atomic_load(&r.push_woke) == (int)i + 1);
        // Every push has returned: all are linked.
        tr_msg *out[RACE_THREADS + 1];
        size_t n = tr_mailbox_take(&r.mb, out, RACE_THREADS + 1);
        TU_CHECK(n == RACE_THREADS);
        for (size_t j = 0; j < n; j++) {
            tr_msg_free(out[j]);
        }
    }
    race_stop(&r);
    tu_checks_pass();
    assert_int_equal(atomic_load(&c.wakes), cycles);
}

// The consumer takes and marks while the pushes race: every true mark gets
// exactly one wake, and no wake comes without a mark.
static void
test_mailbox_wake_once_racing_consumer(void **state)
{
    (void)state;
    static race r;
    race_arg args[RACE_THREADS];
    uint32_t cycles = scaled(3000, 1000, 200);
    sem_t sem;
    sem_init(&sem, 0, 0);
    cwaker c = {.sem = &sem};
    atomic_init(&c.wakes, 0);
    race_start(&r, args, cycles);
    int marks = 0;
    bool ok = true;
    for (uint32_t i = 0; i < cycles; i++) {
        pthread_barrier_wait(&r.start);
        uint32_t got = 0;
        while (ok && got < RACE_THREADS) {
            tr_msg *out[RACE_THREADS];
            size_t n = tr_mailbox_take(&r.mb, out, RACE_THREADS);
            for (size_t j = 0; j < n; j++) {
                tr_msg_free(out[j]);
            }
            got += (uint32_t)n;
            if (n > 0 || got == RACE_THREADS) {
                continue;
            }
            if (tr_mailbox_markempty(&r.mb, cwaker_of(&c))) {
                marks++;
                if (!tu_sem_wait_ms(&sem, TU_WAIT_MS)) {
                    tu_fail_record(__FILE__, __LINE__, "a mark got no wake (lost wake-up)");
                    ok = false;
                }
            } else {
                sched_yield(); // a push in its window
            }
        }
        pthread_barrier_wait(&r.done);
    }
    race_stop(&r);
    tu_checks_pass();
    assert_int_equal(atomic_load(&c.wakes), marks);
    assert_int_equal(atomic_load(&r.push_woke), marks);
    assert_int_equal(sem_value(&sem), 0);
    sem_destroy(&sem);
    print_message("[   INFO   ] %d marks in %u cycles\n", marks, cycles);
}

// ---------------------------------------------------------------------------
// Stress: STRESS_PRODUCERS threads push 10^6 messages each (scaled) into one
// mailbox; the consumer sleeps whenever it finds nothing (markempty and a
// semaphore waker), checks each producer's order and the total. Each
// producer has STRESS_WINDOW credits (a semaphore the consumer posts per
// message of that producer), so the queue stays small however the threads
// are scheduled.

#define STRESS_PRODUCERS 8
#define STRESS_WINDOW 1024

typedef struct stress {
    _Alignas(64) tr_mailbox mb;
    uint32_t per; // messages per producer
    sem_t credits[STRESS_PRODUCERS];
    pthread_t thr[STRESS_PRODUCERS];
} stress;

typedef struct stress_arg {
    stress *s;
    uint32_t id;
} stress_arg;

static bool
take_credit(sem_t *s)
{
    return sem_trywait(s) == 0 || tu_sem_wait_ms(s, TU_WAIT_MS);
}

static void *
stress_producer(void *arg)
{
    stress_arg *a = arg;
    stress *s = a->s;
    for (uint32_t seq = 0; seq < s->per; seq++) {
        if (!take_credit(&s->credits[a->id])) {
            tu_fail_record(__FILE__, __LINE__, "a producer got no credit back");
            break;
        }
        tr_mailbox_push(&s->mb, msg_new(a->id, seq));
    }
    return NULL;
}

static void
test_mailbox_stress_producers(void **state)
{
    (void)state;
    static stress s;
    stress_arg args[STRESS_PRODUCERS];
    s.per = scaled(1000000, 200000, 20000);
    tr_mailbox_init(&s.mb, 0);
    for (uint32_t i = 0; i < STRESS_PRODUCERS; i++) {
        sem_init(&s.credits[i], 0, STRESS_WINDOW);
    }
    sem_t wake;
    sem_init(&wake, 0, 0);
    cwaker c = {.sem = &wake};
    atomic_init(&c.wakes, 0);
    uint64_t t0 = tu_now_ns();
    for (uint32_t i = 0; i < STRESS_PRODUCERS; i++) {
        args[i].s = &s;
        args[i].id = i;
        tu_thread_start(&s.thr[i], stress_producer, &args[i]);
    }
    uint32_t next[STRESS_PRODUCERS] = {0};
    uint64_t total = (uint64_t)s.per * STRESS_PRODUCERS, got = 0;
    int marks = 0, misorders = 0;
    while (got < total) {
        tr_msg *out[64];
        size_t n = tr_mailbox_take(&s.mb, out, 64);
        for (size_t j = 0; j < n; j++) {
            const tmsg *t = as_tmsg(out[j]);
            if (t->producer >= STRESS_PRODUCERS || t->seq != next[t->producer]) {
                misorders++;
            } else {
                next[t->producer]++;
                sem_post(&s.credits[t->producer]);
            }
            tr_msg_free(out[j]);
        }
        got += n;
        if (n > 0) {
            continue;
        }
        if (tr_mailbox_markempty(&s.mb, cwaker_of(&c))) {
            marks++;
            if (!tu_sem_wait_ms(&wake, TU_WAIT_MS)) {
                tu_fail_record(__FILE__, __LINE__, "the consumer was not woken");
                break;
            }
        } else {
            sched_yield(); // a push in its window
        }
    }
    for (uint32_t i = 0; i < STRESS_PRODUCERS; i++) {
        tu_thread_join(s.thr[i]);
    }
    double secs = (double)(tu_now_ns() - t0) / 1e9;
    tu_checks_pass();
    assert_int_equal(misorders, 0);
    assert_int_equal(got, total);
    for (uint32_t i = 0; i < STRESS_PRODUCERS; i++) {
        assert_int_equal(next[i], s.per);
        sem_destroy(&s.credits[i]);
    }
    assert_int_equal(atomic_load(&c.wakes), marks);
    assert_int_equal(sem_value(&wake), 0);
    assert_null(tr_mailbox_pop(&s.mb));
    assert_int_equal(tr_mailbox_len(&s.mb), 0);
    tr_mailbox_fini(&s.mb, NULL, NULL);
    sem_destroy(&wake);
    print_message("[   INFO   ] %u x %u messages in %.2f s (%d sleeps)\n", STRESS_PRODUCERS, s.per,
                  secs, marks);
}

// try_push against a small bound: producers that find the lane full wait
// for the consumer's next take (a futex on a take counter, no lost wake:
// the counter is read before the try), the consumer sleeps on markempty.
// The lane never holds more than the bound.

#define BOUNDED_PRODUCERS 4
#define BOUNDED_BOUND 8

typedef struct bounded {
    _Alignas(64) tr_mailbox mb;
    uint32_t per;
    _Atomic uint32_t takes;    // bumped by the consumer after each take
    _Atomic uint32_t sleepers; // producers waiting on takes
    atomic_uint fulls;         // TR_EAGAIN results
    pthread_t thr[BOUNDED_PRODUCERS];
} bounded;

typedef struct bounded_arg {
    bounded *b;
    uint32_t id;
} bounded_arg;

static void *
bounded_producer(void *arg)
{
    bounded_arg *a = arg;
    bounded *b = a->b;
    uint32_t seq = 0;
    tr_msg *m = NULL;
    while (seq < b->per) {
        if (m == NULL) {
            m = msg_new(a->id, seq);
        }
        uint32_t seen = atomic_load(&b->takes);
        if (tr_mailbox_try_push(&b->mb, m, NULL) == TR_OK) {
            m = NULL;
            seq++;
            continue;
        }
        atomic_fetch_add(&b->fulls, 1);
        // Full: wait until the consumer takes (after our try, the counter
        // has moved and the futex returns at once).
        atomic_fetch_add(&b->sleepers, 1);
        uint64_t deadline = tu_deadline(TU_WAIT_MS);
        while (atomic_load(&b->takes) == seen && tu_now_ns() < deadline) {
            tr__futex_wait(&b->takes, seen, 100 * 1000000ull);
        }
        atomic_fetch_sub(&b->sleepers, 1);
        if (atomic_load(&b->takes) == seen) {
            tu_fail_record(__FILE__, __LINE__, "a full lane was never taken from");
            break;
        }
    }
    if (m != NULL) {
        tr_msg_free(m);
    }
    return NULL;
}

static void
test_mailbox_stress_try_push_bound(void **state)
{
    (void)state;
    static bounded b;
    bounded_arg args[BOUNDED_PRODUCERS];
    b.per = scaled(200000, 50000, 5000);
    tr_mailbox_init(&b.mb, BOUNDED_BOUND);
    atomic_init(&b.takes, 0);
    atomic_init(&b.sleepers, 0);
    atomic_init(&b.fulls, 0);
    sem_t wake;
    sem_init(&wake, 0, 0);
    cwaker c = {.sem = &wake};
    atomic_init(&c.wakes, 0);
    uint64_t t0 = tu_now_ns();
    for (uint32_t i = 0; i < BOUNDED_PRODUCERS; i++) {
        args[i].b = &b;
        args[i].id = i;
        tu_thread_start(&b.thr[i], bounded_producer, &args[i]);
    }
    uint32_t next[BOUNDED_PRODUCERS] = {0};
    uint64_t total = (uint64_t)b.per * BOUNDED_PRODUCERS, got = 0;
    int marks = 0, misorders = 0, overfull = 0;
    while (got < total) {
        if (tr_mailbox_len(&b.mb) > BOUNDED_BOUND) {
            overfull++;
        }
        tr_msg *out[4];
        size_t n = tr_mailbox_take(&b.mb, out, 4);
        if (n > 0) {
            atomic_fetch_add(&b.takes, 1);
            if (atomic_load(&b.sleepers) != 0) {
                tr__futex_wake(&b.takes, INT32_MAX);
            }
        }
        for (size_t j = 0; j < n; j++) {
            const tmsg *t = as_tmsg(out[j]);
            if (t->producer >= BOUNDED_PRODUCERS || t->seq != next[t->producer]) {
                misorders++;
            } else {
                next[t->producer]++;
            }
            tr_msg_free(out[j]);
        }
        got += n;
        if (n > 0) {
            continue;
        }
        if (tr_mailbox_markempty(&b.mb, cwaker_of(&c))) {
            marks++;
            if (!tu_sem_wait_ms(&wake, TU_WAIT_MS)) {
                tu_fail_record(__FILE__, __LINE__, "the consumer was not woken");
                break;
            }
        } else {
            sched_yield(); // a push in its window
        }
    }
    // Release any producer still waiting (only after a failure).
    atomic_fetch_add(&b.takes, 1);
    tr__futex_wake(&b.takes, INT32_MAX);
    for (uint32_t i = 0; i < BOUNDED_PRODUCERS; i++) {
        tu_thread_join(b.thr[i]);
    }
    double secs = (double)(tu_now_ns() - t0) / 1e9;
    tu_checks_pass();
    assert_int_equal(misorders, 0);
    assert_int_equal(overfull, 0);
    assert_int_equal(got, total);
    assert_int_equal(atomic_load(&c.wakes), marks);
    assert_int_equal(sem_value(&wake), 0);
    tr_mailbox_fini(&b.mb, NULL, NULL);
    sem_destroy(&wake);
    print_message("[   INFO   ] %u x %u messages, bound %u, in %.2f s (%u full, %d sleeps)\n",
                  BOUNDED_PRODUCERS, b.per, BOUNDED_BOUND, secs, atomic_load(&b.fulls), marks);
}

// ---------------------------------------------------------------------------
// tr_mailbox_send from tasks.

typedef struct send_rep {
    atomic_uint polls;
    atomic_uint pendings; // sends that returned TR_PENDING
    atomic_uint sent;
} send_rep;

// A sender task sends [next, end) as producer id; its drop abandons a
// pending send and frees the message it still owns.
typedef struct sender {
    int tr_pc;
    tr_mailbox *mb;
    tr_mailbox_op op;
    uint32_t id;
    uint32_t next;
    uint32_t end;
    tr_msg *m; // owned until the send is READY
    tr_err err;
    send_rep *rep;
} sender;

static bool
op_is_idle(const tr_mailbox_op *op)
{
    static const tr_mailbox_op zero;
    return memcmp(op, &zero, sizeof zero) == 0;
}

static tr_poll
sender_send(sender *st, tr_cx *cx)
{
    tr_poll p = tr_mailbox_send(st->mb, cx, &st->op, st->m, &st->err);
    if (p == TR_PENDING) {
        atomic_fetch_add(&st->rep->pendings, 1);
    }
    return p;
}

static tr_poll
sender_poll(void *arg, tr_cx *cx)
{
    sender *st = arg;
    atomic_fetch_add(&st->rep->polls, 1);
    TR_BEGIN(st);
    while (st->next < st->end) {
        st->m = msg_new(st->id, st->next);
        TR_AWAIT(st, sender_send(st, cx));
        TU_CHECK(st->err == TR_OK);
        TU_CHECK(op_is_idle(&st->op)); // reusable at once
        st->m = NULL;
        st->next++;
        atomic_fetch_add(&st->rep->sent, 1);
    }
    TR_END(st);
}

static void
sender_drop(void *arg)
{
    sender *st = arg;
    tr_mailbox_send_abandon(st->mb, &st->op);
    if (st->m != NULL) {
        tr_msg_free(st->m);
    }
}

static const tr_task_spec sender_spec = {
    .name = "mb-sender", .poll = sender_poll, .drop = sender_drop, .size = sizeof(sender)};

static tr_join
spawn_sender(tr_rt *rt, tr_mailbox *mb, uint32_t id, uint32_t count, send_rep *rep)
{
    tr_join j = TR_JOIN_NONE;
    sender init = {.mb = mb, .id = id, .end = count, .rep = rep};
    TU_CHECK(tr_spawn(rt, &sender_spec, NULL, &init, &j) == TR_OK);
    return j;
}

// run_root runs a root of kind spec, its state a copy of *init, on rt
// under a watchdog, then checks what its tasks recorded and frees rt.
static void
run_root(tr_rt *rt, const tr_task_spec *spec, const void *init)
{
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_outcome out;
    memset(&out, 0, sizeof out);
    tr_err rv = tr_rt_run(rt, spec, NULL, (void *)init, &out);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(rv, TR_OK);
    assert_int_equal(out.err, TR_OK);
    tu_rt_free_clean(rt);
}

// Three senders of two messages each into a lane bounded at two: the first
// fills it, the others wait; every message the root takes gives its place
// to the sender that has waited longest.
typedef struct fifo_root {
    int tr_pc;
    tr_mailbox *mb;
    tr_join join[3];
    send_rep rep[3];
    tr_msg *m;
    uint32_t i;
    uint32_t order[6]; // producer * 10 + seq, in the order taken
    uint64_t tu_deadline;
    tr_outcome out;
} fifo_root;

static tr_poll
fifo_root_poll(void *arg, tr_cx *cx)
{
    fifo_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 3; st->i++) {
        st->join[st->i] = spawn_sender(tr_cx_rt(cx), st->mb, st->i, 2, &st->rep[st->i]);
    }
    TU_YIELD_UNTIL(st, cx,
                   atomic_load(&st->rep[0].polls) >= 1 && atomic_load(&st->rep[1].polls) >= 1 &&
                       atomic_load(&st->rep[2].polls) >= 1);
    TU_CHECK(tr_mailbox_len(st->mb) == 2);
    TU_CHECK(atomic_load(&st->rep[0].sent) == 2);
    TU_CHECK(atomic_load(&st->rep[1].sent) == 0 && atomic_load(&st->rep[1].pendings) == 1);
    TU_CHECK(atomic_load(&st->rep[2].sent) == 0 && atomic_load(&st->rep[2].pendings) == 1);
    TU_CHECK(atomic_load(&st->mb->mb_waiters) == 2);
    for (st->i = 0; st->i < 6; st->i++) {
        TU_YIELD_UNTIL(st, cx, (st->m = tr_mailbox_pop(st->mb)) != NULL);
        if (st->m == NULL) {
            break;
        }
        st->order[st->i] = as_tmsg(st->m)->producer * 10 + as_tmsg(st->m)->seq;
        tr_msg_free(st->m);
        st->m = NULL;
        TU_CHECK(tr_mailbox_len(st->mb) <= 2);
    }
    for (st->i = 0; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        TU_CHECK(st->out.err == TR_OK);
    }
    {
        static const uint32_t want[6] = {0, 1, 10, 20, 11, 21};
        for (int k = 0; k < 6; k++) {
            TU_CHECK(st->order[k] == want[k]);
        }
    }
    TU_CHECK(atomic_load(&st->rep[1].pendings) == 2);
    TU_CHECK(atomic_load(&st->rep[2].pendings) == 2);
    TU_CHECK(tr_mailbox_len(st->mb) == 0);
    TU_CHECK(atomic_load(&st->mb->mb_waiters) == 0);
    TU_CHECK(atomic_load(&st->mb->mb_granted) == 0);
    TU_CHECK(tr_mailbox_pop(st->mb) == NULL);
    TR_END(st);
}

static const tr_task_spec fifo_root_spec = {
    .name = "mb-fifo-root", .poll = fifo_root_poll, .size = sizeof(fifo_root)};

static void
test_mailbox_send_waits_at_bound_fifo(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 2);
    tr_rt *rt = tu_rt_new_fifo();
    run_root(rt, &fifo_root_spec, &(fifo_root){.mb = &mb});
    tr_mailbox_fini(&mb, NULL, NULL);
}

// A sender cancelled while it waits (its drop abandons): still in line, or
// already granted a place and woken but not yet run. Either way the others
// get through and no place is lost.
typedef struct cancel_root {
    int tr_pc;
    tr_mailbox *mb;
    bool granted;
    tr_join join[3];
    send_rep rep[3];
    tr_msg *m;
    uint32_t i;
    uint32_t got[2];
    uint64_t tu_deadline;
    tr_outcome out;
} cancel_root;

static tr_poll
cancel_root_poll(void *arg, tr_cx *cx)
{
    cancel_root *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_mailbox_try_push(st->mb, msg_new(9, 0), NULL) == TR_OK); // full (bound 1)
    for (st->i = 0; st->i < 3; st->i++) {
        st->join[st->i] = spawn_sender(tr_cx_rt(cx), st->mb, st->i, 1, &st->rep[st->i]);
    }
    TU_YIELD_UNTIL(st, cx,
                   atomic_load(&st->rep[0].pendings) >= 1 &&
                       atomic_load(&st->rep[1].pendings) >= 1 &&
                       atomic_load(&st->rep[2].pendings) >= 1);
    TU_CHECK(atomic_load(&st->mb->mb_waiters) == 3);
    if (st->granted) {
        // Sender 0 is granted the place and woken, but on one worker it does
        // not run before the root yields: cancelled now, its drop must hand
        // the place (and the wake-up) to sender 1.
        st->m = tr_mailbox_pop(st->mb);
        TU_CHECK(st->m != NULL && as_tmsg(st->m)->producer == 9);
        tr_msg_free(st->m);
        st->m = NULL;
        TU_CHECK(atomic_load(&st->mb->mb_granted) == 1);
        TU_CHECK(tr_task_abort(&st->join[0]) == TR_OK);
        {
            tr_msg *y = msg_new(9, 1);
            TU_CHECK(tr_mailbox_try_push(st->mb, y, NULL) == TR_EAGAIN); // the place is taken
            tr_msg_free(y);
        }
    } else {
        TU_CHECK(tr_task_abort(&st->join[0]) == TR_OK);
        TR_AWAIT(st, tr_join_poll(&st->join[0], cx, &st->out));
        TU_CHECK(st->out.err == TR_ECANCELED);
        TU_CHECK(atomic_load(&st->mb->mb_waiters) == 2);
        st->m = tr_mailbox_pop(st->mb);
        TU_CHECK(st->m != NULL && as_tmsg(st->m)->producer == 9);
        tr_msg_free(st->m);
        st->m = NULL;
    }
    for (st->i = 0; st->i < 2; st->i++) {
        TU_YIELD_UNTIL(st, cx, (st->m = tr_mailbox_pop(st->mb)) != NULL);
        if (st->m == NULL) {
            break;
        }
        st->got[st->i] = as_tmsg(st->m)->producer;
        tr_msg_free(st->m);
        st->m = NULL;
    }
    TU_CHECK(st->got[0] == 1 && st->got[1] == 2);
    for (st->i = st->granted ? 0 : 1; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        TU_CHECK(st->out.err == (st->i == 0 ? TR_ECANCELED : TR_OK));
    }
    TU_CHECK(atomic_load(&st->rep[0].sent) == 0);
    TU_CHECK(atomic_load(&st->rep[0].polls) == 1);
    TU_CHECK(atomic_load(&st->rep[1].sent) == 1 && atomic_load(&st->rep[2].sent) == 1);
    TU_CHECK(tr_mailbox_len(st->mb) == 0);
    TU_CHECK(atomic_load(&st->mb->mb_waiters) == 0);
    TU_CHECK(atomic_load(&st->mb->mb_granted) == 0);
    TU_CHECK(tr_mailbox_pop(st->mb) == NULL);
    // No place was lost: the lane takes its one message again.
    {
        tr_msg *z = msg_new(9, 2);
        TU_CHECK(tr_mailbox_try_push(st->mb, z, NULL) == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec cancel_root_spec = {
    .name = "mb-cancel-root", .poll = cancel_root_poll, .size = sizeof(cancel_root)};

static void
run_cancel(bool granted)
{
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 1);
    tr_rt *rt = tu_rt_new_fifo();
    run_root(rt, &cancel_root_spec, &(cancel_root){.mb = &mb, .granted = granted});
    assert_int_equal(drain(&mb), 1);
    tr_mailbox_fini(&mb, NULL, NULL);
}

static void
test_mailbox_send_cancel_waiting(void **state)
{
    (void)state;
    run_cancel(false);
}

static void
test_mailbox_send_cancel_granted_passes_place(void **state)
{
    (void)state;
    run_cancel(true);
}

// Many senders, each reusing one op for all its messages, on two workers,
// with a consumer task that sleeps on markempty: all get through, each
// sender's messages in order, the lane never over its bound.
#define MANY_SENDERS 4
#define MANY_BOUND 4

typedef struct consumer {
    tr_mailbox *mb;
    uint32_t total;
    uint32_t got;
    uint32_t next[MANY_SENDERS];
} consumer;

static tr_poll
consumer_poll(void *arg, tr_cx *cx)
{
    consumer *st = arg;
    for (int turn = 0; turn < 8; turn++) {
        TU_CHECK(tr_mailbox_len(st->mb) <= MANY_BOUND);
        tr_msg *out[8];
        size_t n = tr_mailbox_take(st->mb, out, 8);
        for (size_t j = 0; j < n; j++) {
            const tmsg *t = as_tmsg(out[j]);
            TU_CHECK(t->producer < MANY_SENDERS && t->seq == st->next[t->producer]);
            if (t->producer < MANY_SENDERS) {
                st->next[t->producer]++;
            }
            tr_msg_free(out[j]);
        }
        st->got += (uint32_t)n;
        if (st->got >= st->total) {
            return TR_READY;
        }
        if (n == 0) {
            if (tr_mailbox_markempty(st->mb, tr_cx_waker(cx))) {
                return TR_PENDING;
            }
            break; // a push in its window: poll again later
        }
    }
    tr_cx_yield(cx);
    return TR_PENDING;
}

static const tr_task_spec consumer_spec = {
    .name = "mb-consumer", .poll = consumer_poll, .size = sizeof(consumer)};

typedef struct many_root {
    int tr_pc;
    tr_mailbox *mb;
    uint32_t per;
    tr_join cons;
    tr_join join[MANY_SENDERS];
    send_rep rep[MANY_SENDERS];
    uint32_t i;
    tr_outcome out;
} many_root;

static tr_poll
many_root_poll(void *arg, tr_cx *cx)
{
    many_root *st = arg;
    TR_BEGIN(st);
    st->cons =
        tu_spawn(cx, &consumer_spec, &(consumer){.mb = st->mb, .total = st->per * MANY_SENDERS});
    for (st->i = 0; st->i < MANY_SENDERS; st->i++) {
        st->join[st->i] = spawn_sender(tr_cx_rt(cx), st->mb, st->i, st->per, &st->rep[st->i]);
    }
    for (st->i = 0; st->i < MANY_SENDERS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->join[st->i], cx, &st->out));
        TU_CHECK(st->out.err == TR_OK);
        TU_CHECK(atomic_load(&st->rep[st->i].sent) == st->per);
    }
    TR_AWAIT(st, tr_join_poll(&st->cons, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK);
    TU_CHECK(tr_mailbox_len(st->mb) == 0);
    TU_CHECK(atomic_load(&st->mb->mb_waiters) == 0);
    TU_CHECK(atomic_load(&st->mb->mb_granted) == 0);
    TR_END(st);
}

static const tr_task_spec many_root_spec = {
    .name = "mb-many-root", .poll = many_root_poll, .size = sizeof(many_root)};

static void
test_mailbox_send_many_senders(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, MANY_BOUND);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 2;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    uint64_t t0 = tu_now_ns();
    run_root(rt, &many_root_spec, &(many_root){.mb = &mb, .per = scaled(5000, 2000, 300)});
    print_message("[   INFO   ] %u senders x %u messages through bound %u in %.2f s\n",
                  MANY_SENDERS, scaled(5000, 2000, 300), MANY_BOUND,
                  (double)(tu_now_ns() - t0) / 1e9);
    assert_null(tr_mailbox_pop(&mb));
    tr_mailbox_fini(&mb, NULL, NULL);
}

// The send charges the poll budget: 1000 sends that never wait still let
// the worker go every budget's worth.
#define BUDGET_MSGS 1000

typedef struct budget_root {
    int tr_pc;
    tr_mailbox *mb;
    tr_mailbox_op op;
    uint32_t limit;
    uint32_t polls;
    uint32_t this_poll;
    uint32_t max_per_poll;
    uint32_t sent;
    tr_msg *m;
    tr_err err;
} budget_root;

static tr_poll
budget_root_poll(void *arg, tr_cx *cx)
{
    budget_root *st = arg;
    st->polls++;
    st->this_poll = 0;
    TR_BEGIN(st);
    while (st->sent < BUDGET_MSGS) {
        st->m = msg_new(0, st->sent);
        TR_AWAIT(st, tr_mailbox_send(st->mb, cx, &st->op, st->m, &st->err));
        TU_CHECK(st->err == TR_OK);
        st->m = NULL;
        st->sent++;
        st->this_poll++;
        if (st->this_poll > st->max_per_poll) {
            st->max_per_poll = st->this_poll;
        }
    }
    TU_CHECK(st->max_per_poll >= 1 && st->max_per_poll <= st->limit);
    TU_CHECK(st->polls >= (BUDGET_MSGS + st->limit - 1) / st->limit);
    TR_END(st);
}

static void
budget_root_drop(void *arg)
{
    budget_root *st = arg;
    tr_mailbox_send_abandon(st->mb, &st->op);
    if (st->m != NULL) {
        tr_msg_free(st->m);
    }
}

static const tr_task_spec budget_root_spec = {.name = "mb-budget-root",
                                              .poll = budget_root_poll,
                                              .drop = budget_root_drop,
                                              .size = sizeof(budget_root)};

static void
test_mailbox_send_charges_budget(void **state)
{
    (void)state;
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.ignore_env = true;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    run_root(rt, &budget_root_spec, &(budget_root){.mb = &mb, .limit = cfg.budget});
    assert_int_equal(tr_mailbox_len(&mb), BUDGET_MSGS);
    for (uint32_t i = 0; i < BUDGET_MSGS; i++) {
        tr_msg *m = tr_mailbox_pop(&mb);
        assert_int_equal(as_tmsg(m)->seq, i);
        tr_msg_free(m);
    }
    tr_mailbox_fini(&mb, NULL, NULL);
}

// ---------------------------------------------------------------------------
// Message slabs.

// elsewhere returns, for a class, the objects neither in the depot nor in
// this thread's cache: live messages and other threads' caches.
static uint64_t
elsewhere(unsigned cls)
{
    tr__msg_stats s;
    tr__msg_stats_get(cls, &s);
    return s.ms_carved - s.ms_depot - s.ms_cached;
}

static void
test_msg_alloc_every_class(void **state)
{
    (void)state;
    assert_int_equal(tr__msg_class_of(0), 1);
    assert_int_equal(tr__msg_class_of(32), 1);
    assert_int_equal(tr__msg_class_of(33), 2);
    assert_int_equal(tr__msg_class_of(4096), TR__MSG_NCLASSES);
    assert_int_equal(tr__msg_class_of(4097), TR__MSG_CLASS_LARGE);
    size_t sizes[] = {0,    1,    sizeof(tr_msg),
                      31,   32,   33,
                      63,   64,   65,
                      100,  128,  129,
                      255,  256,  257,
                      511,  512,  513,
                      1000, 1024, 1025,
                      2047, 2048, 2049,
                      4095, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t size = sizes[i];
        size_t want_cls = 1;
        while (((size_t)32 << (want_cls - 1)) < size) {
            want_cls++;
        }
        tr_msg *m = tr_msg_alloc(size);
        assert_non_null(m);
        assert_int_equal((uintptr_t)m % 16, 0);
        assert_null(atomic_load(&m->m_link.l_next));
        assert_null(m->m_type);
        assert_int_equal(m->m_flags, 0);
        assert_int_equal(m->m_class, want_cls);
        assert_int_equal(tr__msg_class_size(m->m_class), (size_t)32 << (want_cls - 1));
        if (size > sizeof(tr_msg)) {
            memset(m + 1, 0xa5, size - sizeof(tr_msg)); // all of it is ours (ASan)
        }
        tr_msg_free(m);
    }
    // Three batches of every class at once, freed newest first: the
    // cache spills to the depot and refills from it.
    for (unsigned cls = 1; cls <= TR__MSG_NCLASSES; cls++) {
        unsigned n = 3 * tr__msg_batch(cls) + 1;
        size_t size = tr__msg_class_size(cls);
        tr_msg **ms = calloc(n, sizeof *ms);
        assert_non_null(ms);
        uint64_t before = elsewhere(cls);
        for (unsigned j = 0; j < n; j++) {
            ms[j] = tr_msg_alloc(size);
            assert_int_equal(ms[j]->m_class, cls);
            memset(ms[j] + 1, (int)j, size - sizeof(tr_msg));
            for (unsigned k = 0; k < j; k += 7) {
                assert_ptr_not_equal(ms[k], ms[j]);
            }
        }
        assert_int_equal(elsewhere(cls), before + n);
        for (unsigned j = n; j-- > 0;) {
            tr_msg_free(ms[j]); // newest first
        }
        assert_int_equal(elsewhere(cls), before);
        tr__msg_stats s;
        tr__msg_stats_get(cls, &s);
        assert_true(s.ms_cached <= 2 * tr__msg_batch(cls));
        free(ms);
    }
}

static void
test_msg_alloc_large(void **state)
{
    (void)state;
    uint64_t live = tr__msg_large_live();
    size_t sizes[] = {4097, 8192, 65536, (size_t)1 << 20};
    tr_msg *ms[4];
    for (int i = 0; i < 4; i++) {
        ms[i] = tr_msg_alloc(sizes[i]);
        assert_int_equal(ms[i]->m_class, TR__MSG_CLASS_LARGE);
        assert_int_equal((uintptr_t)ms[i] % 16, 0);
        assert_null(ms[i]->m_type);
        assert_int_equal(ms[i]->m_flags, 0);
        memset(ms[i] + 1, 0x5a, sizes[i] - sizeof(tr_msg));
    }
    assert_int_equal(tr__msg_large_live(), live + 4);
    // A large message travels through a mailbox like any other.
    _Alignas(64) tr_mailbox mb;
    tr_mailbox_init(&mb, 0);
    tr_mailbox_push(&mb, ms[3]);
    assert_ptr_equal(tr_mailbox_pop(&mb), ms[3]);
    tr_mailbox_fini(&mb, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        tr_msg_free(ms[i]);
    }
    assert_int_equal(tr__msg_large_live(), live);
}

// Messages allocated on one thread and freed on another, both ways.
#define XFREE_N 5000

typedef struct xfree {
    tr_msg *ms[XFREE_N];
    bool do_alloc; // else free
} xfree;

static void *
xfree_main(void *arg)
{
    xfree *x = arg;
    for (int i = 0; i < XFREE_N; i++) {
        if (x->do_alloc) {
            x->ms[i] = msg_new(1, (uint32_t)i);
        } else {
            TU_CHECK(as_tmsg(x->ms[i])->seq == (uint32_t)i);
            tr_msg_free(x->ms[i]);
        }
    }
    return NULL;
}

static void
test_msg_free_on_other_thread(void **state)
{
    (void)state;
    static xfree x;
    uint64_t before = elsewhere(1);
    pthread_t t;
    // Allocated there, freed here.
    x.do_alloc = true;
    tu_thread_start(&t, xfree_main, &x);
    tu_thread_join(t);
    for (int i = 0; i < XFREE_N; i++) {
        assert_int_equal(as_tmsg(x.ms[i])->seq, (uint32_t)i);
        tr_msg_free(x.ms[i]);
    }
    // Allocated here, freed there.
    for (int i = 0; i < XFREE_N; i++) {
        x.ms[i] = msg_new(2, (uint32_t)i);
    }
    x.do_alloc = false;
    tu_thread_start(&t, xfree_main, &x);
    tu_thread_join(t);
    tu_checks_pass();
    // Both threads have exited: nothing is live, nothing stranded.
    assert_int_equal(elsewhere(1), before);
}

// A thread that exits with a full cache returns it to the depot.
typedef struct exiter {
    unsigned cls;
    uint64_t cached; // its cache, just before it exits
    sem_t ready;
    sem_t go;
} exiter;

static void *
exiter_main(void *arg)
{
    exiter *e = arg;
    unsigned n = 3 * tr__msg_batch(e->cls);
    tr_msg **ms = calloc(n, sizeof *ms);
    for (unsigned i = 0; i < n; i++) {
        ms[i] = tr_msg_alloc(tr__msg_class_size(e->cls));
    }
    for (unsigned i = 0; i < n; i++) {
        tr_msg_free(ms[i]);
    }
    free(ms);
    tr__msg_stats s;
    tr__msg_stats_get(e->cls, &s);
    e->cached = s.ms_cached;
    sem_post(&e->ready);
    TU_CHECK(tu_sem_wait_ms(&e->go, TU_WAIT_MS));
    return NULL;
}

static void
test_msg_thread_exit_returns_cache(void **state)
{
    (void)state;
    for (unsigned cls = 1; cls <= TR__MSG_NCLASSES; cls++) {
        exiter e = {.cls = cls};
        sem_init(&e.ready, 0, 0);
        sem_init(&e.go, 0, 0);
        uint64_t before = elsewhere(cls);
        pthread_t t;
        tu_thread_start(&t, exiter_main, &e);
        assert_true(tu_sem_wait_ms(&e.ready, TU_WAIT_MS));
        // Its cache holds a full batch and at most two (it may have started
        // from a partial batch another thread's exit left in the depot).
        assert_true(e.cached >= tr__msg_batch(cls) && e.cached <= 2 * tr__msg_batch(cls));
        assert_int_equal(elsewhere(cls), before + e.cached);
        sem_post(&e.go);
        tu_thread_join(t);
        assert_int_equal(elsewhere(cls), before);
        sem_destroy(&e.ready);
        sem_destroy(&e.go);
    }
    tu_checks_pass();
}

// tr_trim gives back the slabs of a class with nothing live or cached.
static void
test_msg_trim_returns_slabs(void **state)
{
    (void)state;
    const unsigned cls = 5; // 512 bytes: no other test uses it
    const size_t size = 300;
    assert_int_equal(tr__msg_class_of(size), cls);
    tr_msg *ms[200];
    for (int i = 0; i < 200; i++) {
        ms[i] = tr_msg_alloc(size);
    }
    tr__msg_stats s;
    tr__msg_stats_get(cls, &s);
    assert_true(s.ms_slabs >= 1);
    for (int i = 1; i < 200; i++) {
        tr_msg_free(ms[i]);
    }
    // One message is still live: the slabs stay.
    tr_trim();
    tr__msg_stats_get(cls, &s);
    assert_true(s.ms_slabs >= 1);
    assert_int_equal(s.ms_cached, 0); // trim flushed this thread's cache
    assert_int_equal(s.ms_carved - s.ms_depot, 1);
    tr_msg_free(ms[0]);
    tr_trim();
    tr__msg_stats_get(cls, &s);
    assert_int_equal(s.ms_slabs, 0);
    assert_int_equal(s.ms_carved, 0);
    assert_int_equal(s.ms_depot, 0);
    // And the class works again afterwards.
    tr_msg *m = tr_msg_alloc(size);
    assert_int_equal(m->m_class, cls);
    tr_msg_free(m);
    tr_trim();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_free_null),
        cmocka_unit_test(test_mailbox_fifo_per_producer),
        cmocka_unit_test(test_mailbox_consumer_waker),
        cmocka_unit_test(test_mailbox_system_lane_first),
        cmocka_unit_test(test_mailbox_take_batches),
        cmocka_unit_test(test_mailbox_try_push_bound),
        cmocka_unit_test(test_mailbox_fini_drops_remaining),
        cmocka_unit_test(test_msg_caller_owned),
        cmocka_unit_test(test_msg_class_register),
        cmocka_unit_test(test_mailbox_markempty_wakes_once),
        cmocka_unit_test(test_mailbox_push_window),
        cmocka_unit_test(test_mailbox_markempty_race_replayed),
        cmocka_unit_test(test_mailbox_wake_once_racing_pushes),
        cmocka_unit_test(test_mailbox_wake_once_racing_consumer),
        cmocka_unit_test(test_mailbox_stress_producers),
        cmocka_unit_test(test_mailbox_stress_try_push_bound),
        cmocka_unit_test(test_mailbox_send_waits_at_bound_fifo),
        cmocka_unit_test(test_mailbox_send_cancel_waiting),
        cmocka_unit_test(test_mailbox_send_cancel_granted_passes_place),
        cmocka_unit_test(test_mailbox_send_many_senders),
        cmocka_unit_test(test_mailbox_send_charges_budget),
        cmocka_unit_test(test_msg_alloc_every_class),
        cmocka_unit_test(test_msg_alloc_large),
        cmocka_unit_test(test_msg_free_on_other_thread),
        cmocka_unit_test(test_msg_thread_exit_returns_cache),
        cmocka_unit_test(test_msg_trim_returns_slabs),
    };
    return tu_run(tests);
}
