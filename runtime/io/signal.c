// Design notes.
//
// Two halves. The process-wide half is what the signal handler may touch,
// all of it lock-free and async-signal-safe: a delivery counter per signal
// (g_count), a fixed table of slots, one per runtime that uses signals,
// each holding that runtime's eventfd and the mask of signals it listens
// to (g_slots), a count of handlers in flight (g_inflight), and the handler
// that was installed before ours (g_chain), which ours calls afterwards. The
// handler bumps the counter first, then writes the eventfd of every slot
// whose mask has the signal. Everything else (reference counts per signal,
// the mode, the saved disposition, slot ownership) is under g_lock, which
// the handler never takes.
//
// A slot is retired by clearing its mask and descriptor, then waiting until
// no handler is in flight: the handler increments g_inflight before it reads
// a slot, both seq_cst, so either the retiring thread sees the handler in
// flight, or the handler sees the cleared slot. Only then is the eventfd
// closed, so a handler never writes to a reused descriptor number.
//
// The per-runtime half (a runtime-local slot) is the eventfd wrapped in a tr_io,
// an optional signalfd (also a tr_io), and per-signal listener counts under
// g_lock. The waiters are the wakers registered on the eventfd's read
// direction (the reactor's waiter queue of that tr_io): every waiting task
// registers there and on wake compares the global counter with the
// snapshot in its tr_signal. A waiter drains the eventfd itself, and a
// drain that finds a delivery wakes every registered waiter
// (tr__io_wake_all): epoll re-checks a descriptor when it reports it, so an
// edge whose eventfd was drained before the reactor got to it is never
// reported, and without that wake the other waiters would sleep through
// the delivery. After registering its waker a waiter looks at the counter
// once more: a delivery drained by another waiter before the registration
// bumped the counter before its write, so the second look sees it; one
// drained after the registration wakes it. Each signal wakes every waiter
// of the runtime (O(waiters)): fine for the few signal waiters a program
// has.
//
// signalfd mode: the runtime's signalfd holds the signals of its signalfd
// listeners. A waiter drains it too, and hands each signal it reads to the
// same delivery routine as the handler (counter, then eventfds), so that
// every listening runtime sees it, whichever read it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <troupe/io.h>
#include <troupe/signal.h>

#include "exec/exec.h"
#include "io/io.h"
#include "reactor/reactor.h"

// Signals 1 .. NSIGS-1 (NSIG is 65 on Linux).
#define NSIGS NSIG

enum { MODE_NONE = 0, MODE_HANDLER = 1, MODE_SIGNALFD = 2 };

typedef void (*sa_fn)(int, siginfo_t *, void *);
typedef void (*plain_fn)(int);

// ---------------------------------------------------------------------------
// What the handler reads (lock-free).

// Deliveries per signal. Bumped (seq_cst) before the eventfds are written;
// read by waiters after they registered their wakers.
static _Atomic uint64_t g_count[NSIGS];

typedef struct slot {
    // Signals the runtime listens to (bit signo-1). Written under g_lock,
    // read by the handler; cleared before s_fd when the slot is retired.
    _Atomic uint64_t s_mask;
    // The runtime's eventfd (valid while s_mask may be non-zero).
    _Atomic int s_fd;
} slot;

static slot g_slots[TR_SIGNAL_MAX_RUNTIMES];

// Handlers between their first slot read and their last write. Pairs with
// the seq_cst slot clearing in slot_retire.
static _Atomic uint32_t g_inflight;

// The handler installed before ours (NULL: SIG_DFL or SIG_IGN), and whether
// it takes siginfo. Set under g_lock before our handler is installed.
static _Atomic(sa_fn) g_chain[NSIGS];
static _Atomic bool g_chain_info[NSIGS];

// ---------------------------------------------------------------------------
// What g_lock guards.

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct sig_global {
    uint32_t refs;        // tr_signal listeners, all runtimes
    int mode;             // MODE_*
    struct sigaction old; // the disposition to restore (MODE_HANDLER)
} sig_global;

static sig_global g_sig[NSIGS];                  // under g_lock
static bool g_slot_used[TR_SIGNAL_MAX_RUNTIMES]; // under g_lock

// The per-runtime state (a runtime-local slot).
typedef struct sig_rt {
    tr_rt *sr_rt;
    int sr_slot;    // index in g_slots (fixed)
    tr_io *sr_evio; // the eventfd (fixed)
    // The signalfd, created by the first signalfd listener (under g_lock)
    // and kept until tr_rt_free; read by waiters without the lock.
    _Atomic(tr_io *) sr_sfdio;
    sigset_t sr_sfdmask;     // under g_lock: the signalfd's mask
    uint32_t sr_refs[NSIGS]; // under g_lock: listeners per signal
} sig_rt;

static inline uint64_t
sig_bit(int signo)
{
    return (uint64_t)1 << (signo - 1);
}

// ---------------------------------------------------------------------------
// Delivery.

// deliver counts one delivery of signo and wakes every runtime listening to
// it. Async-signal-safe: atomics and write(2) only.
static void
deliver(int signo)
{
    atomic_fetch_add(&g_inflight, 1);
    atomic_fetch_add(&g_count[signo], 1);
    uint64_t bit = sig_bit(signo);
    for (int i = 0; i < TR_SIGNAL_MAX_RUNTIMES; i++) {
        if (atomic_load(&g_slots[i].s_mask) & bit) {
            int fd = atomic_load(&g_slots[i].s_fd);
            if (fd >= 0) {
                uint64_t one = 1;
                ssize_t r;
                do {
                    r = write(fd, &one, sizeof one);
                } while (r < 0 && errno == EINTR);
                // EAGAIN: the counter is saturated and readable anyway.
            }
        }
    }
    atomic_fetch_sub(&g_inflight, 1);
}

static void
on_signal(int signo, siginfo_t *si, void *uc)
{
    int saved = errno;
    if (signo > 0 && signo < NSIGS) {
        deliver(signo);
        sa_fn prev = atomic_load_explicit(&g_chain[signo], memory_order_acquire);
        if (prev != NULL) {
            if (atomic_load_explicit(&g_chain_info[signo], memory_order_relaxed)) {
                prev(signo, si, uc);
            } else {
                ((plain_fn)(void (*)(void))prev)(signo);
            }
        }
    }
    errno = saved;
}

static bool
waitable(int signo)
{
    if (signo <= 0 || signo >= NSIGS) {
        return false;
    }
    switch (signo) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
        return false;
    default:
        return true;
    }
}

// handler_install puts on_signal in place and remembers what was there.
// Under g_lock.
static int
handler_install(int signo)
{
    struct sigaction old;
    if (sigaction(signo, NULL, &old) != 0) {
        return errno;
    }
    sa_fn prev = NULL;
    bool info = (old.sa_flags & SA_SIGINFO) != 0;
    if (info) {
        if (old.sa_sigaction != on_signal) {
            prev = old.sa_sigaction;
        }
    } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
        prev = (sa_fn)(void (*)(void))old.sa_handler;
    }
    atomic_store_explicit(&g_chain_info[signo], info, memory_order_relaxed);
    atomic_store_explicit(&g_chain[signo], prev, memory_order_release);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    // SA_ONSTACK: in a program that gives its threads alternate signal
    // stacks (Go requires it of handlers C code installs) the handler runs
    // there; without one it is a no-op. valgrind 3.19 then fails to grow
    // the main thread's stack for the frame (tests/runtime/test_util.h,
    // tu_prefault_stack), which the test suites work around.
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0) {
        int e = errno;
        atomic_store_explicit(&g_chain[signo], NULL, memory_order_release);
        return e;
    }
    g_sig[signo].old = old;
    return 0;
}

// handler_restore puts the saved disposition back. Under g_lock. The chain
// pointer stays: a handler still running on another thread may use it.
static void
handler_restore(int signo)
{
    sigaction(signo, &g_sig[signo].old, NULL);
}

// ---------------------------------------------------------------------------
// Descriptors.

// fd_high moves a new descriptor above the standard streams (tr_io_open
// treats 0..2 as borrowed, and they may be free if the program closed them).
static int
fd_high(int fd)
{
    if (fd < 0 || fd > 2) {
        return fd;
    }
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}

// sfd_set gives the runtime's signalfd the mask m, creating it on first
// use. Under g_lock.
static tr_err
sfd_set(sig_rt *sr, const sigset_t *m)
{
    tr_io *io = atomic_load_explicit(&sr->sr_sfdio, memory_order_relaxed);
    if (io == NULL) {
        int fd = fd_high(signalfd(-1, m, SFD_NONBLOCK | SFD_CLOEXEC));
        if (fd < 0) {
            return tr__errno(errno);
        }
        tr_err err = tr_io_open(sr->sr_rt, fd, 0, &io);
        if (err != TR_OK) {
            close(fd);
            return err;
        }
        atomic_store_explicit(&sr->sr_sfdio, io, memory_order_release);
    } else if (signalfd(tr_io_fd(io), m, 0) < 0) {
        return tr__errno(errno);
    }
    sr->sr_sfdmask = *m;
    return TR_OK;
}

// ---------------------------------------------------------------------------
// The per-runtime state.

// sig_rt_free retires the slot and frees sr (no task uses it any more).
static void
sig_rt_free(sig_rt *sr)
{
    pthread_mutex_lock(&g_lock);
    // Listeners never dropped (a tr_signal outside any task that outlived
    // its runtime): forget them, so the dispositions are still restored.
    for (int s = 1; s < NSIGS; s++) {
        uint32_t n = sr->sr_refs[s];
        if (n == 0) {
            continue;
        }
        sr->sr_refs[s] = 0;
        TR__ASSERT(g_sig[s].refs >= n);
        g_sig[s].refs -= n;
        if (g_sig[s].refs == 0) {
            if (g_sig[s].mode == MODE_HANDLER) {
                handler_restore(s);
            }
            g_sig[s].mode = MODE_NONE;
        }
    }
    slot *sl = &g_slots[sr->sr_slot];
    atomic_store(&sl->s_mask, 0);
    atomic_store(&sl->s_fd, -1);
    // Wait out the handlers that may have read the old descriptor (see the
    // design notes). They never block, so this is short.
    while (atomic_load(&g_inflight) != 0) {
        sched_yield();
    }
    g_slot_used[sr->sr_slot] = false;
    pthread_mutex_unlock(&g_lock);
    tr_io_release(sr->sr_evio);
    tr_io *sfd = atomic_load_explicit(&sr->sr_sfdio, memory_order_acquire);
    if (sfd != NULL) {
        tr_io_release(sfd);
    }
    tr__free(sr, sizeof(*sr));
}

static void
sig_rt_fini(tr_rt *rt, void *ext)
{
    (void)rt;
    sig_rt_free(ext);
}

// The runtime-local slot of signals: one key per process.
static tr_rt_key sig_key_v;
static pthread_once_t sig_key_once = PTHREAD_ONCE_INIT;

static void
sig_key_init(void)
{
    if (tr_rt_key_create(&sig_key_v, sig_rt_fini) != TR_OK) {
        tr__panic("no runtime-local key left for signals");
    }
}

static tr_rt_key
sig_key(void)
{
    pthread_once(&sig_key_once, sig_key_init);
    return sig_key_v;
}

static tr_err sig_rt_get(tr_rt *rt, sig_rt **out);

tr_err
tr__signal_rt_ensure(tr_rt *rt)
{
    sig_rt *sr;
    return sig_rt_get(rt, &sr);
}

// sig_rt_get returns rt's signal state, creating it on first use.
static tr_err
sig_rt_get(tr_rt *rt, sig_rt **out)
{
    sig_rt *sr = tr_rt_local_get(rt, sig_key());
    if (sr != NULL) {
        *out = sr;
        return TR_OK;
    }
    int fd = fd_high(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (fd < 0) {
        return tr__errno(errno);
    }
    sr = tr__zalloc(sizeof(*sr));
    sr->sr_rt = rt;
    sigemptyset(&sr->sr_sfdmask);
    tr_err err = tr_io_open(rt, fd, 0, &sr->sr_evio);
    if (err != TR_OK) {
        close(fd);
        tr__free(sr, sizeof(*sr));
        return err;
    }
    pthread_mutex_lock(&g_lock);
    int i = 0;
    while (i < TR_SIGNAL_MAX_RUNTIMES && g_slot_used[i]) {
        i++;
    }
    if (i == TR_SIGNAL_MAX_RUNTIMES) {
        pthread_mutex_unlock(&g_lock);
        tr_io_release(sr->sr_evio);
        tr__free(sr, sizeof(*sr));
        return TR_EEXHAUSTED;
    }
    g_slot_used[i] = true;
    sr->sr_slot = i;
    atomic_store(&g_slots[i].s_mask, 0);
    atomic_store(&g_slots[i].s_fd, fd);
    pthread_mutex_unlock(&g_lock);
    sig_rt *won = tr_rt_local_set(rt, sig_key(), sr);
    if (won != sr) {
        sig_rt_free(sr); // another thread was first; ours never listened
    }
    *out = won;
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Listening.

tr_err
tr_signal_init(tr_signal *sig, tr_rt *rt, int signo, unsigned flags)
{
    if (sig == NULL) {
        return TR_EINVAL;
    }
    memset(sig, 0, sizeof(*sig));
    if (rt == NULL || !waitable(signo) || (flags & ~(unsigned)TR_SIGNAL_SIGNALFD) != 0) {
        return TR_EINVAL;
    }
    int want = (flags & TR_SIGNAL_SIGNALFD) ? MODE_SIGNALFD : MODE_HANDLER;
    if (want == MODE_SIGNALFD) {
        sigset_t cur;
        if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0 || !sigismember(&cur, signo)) {
            return TR_EINVAL; // not blocked: the default action would run
        }
    }
    sig_rt *sr = NULL;
    tr_err err = sig_rt_get(rt, &sr);
    if (err != TR_OK) {
        return err;
    }
    pthread_mutex_lock(&g_lock);
    sig_global *g = &g_sig[signo];
    if (g->refs > 0 && g->mode != want) {
        pthread_mutex_unlock(&g_lock);
        return TR_EBUSY;
    }
    if (want == MODE_SIGNALFD && sr->sr_refs[signo] == 0) {
        sigset_t m = sr->sr_sfdmask;
        sigaddset(&m, signo);
        err = sfd_set(sr, &m);
        if (err != TR_OK) {
            pthread_mutex_unlock(&g_lock);
            return err;
        }
    }
    if (g->refs == 0) {
        if (want == MODE_HANDLER) {
            int e = handler_install(signo);
            if (e != 0) {
                pthread_mutex_unlock(&g_lock);
                return tr__errno(e);
            }
        }
        g->mode = want;
    }
    g->refs++;
    if (sr->sr_refs[signo]++ == 0) {
        atomic_fetch_or(&g_slots[sr->sr_slot].s_mask, sig_bit(signo));
    }
    // After the handler and the slot's mask are in place: every delivery
    // from here on bumps the counter past the snapshot and wakes rt.
    sig->sg_seen = atomic_load(&g_count[signo]);
    sig->sg_signo = signo;
    sig->sg_flags = flags;
    sig->sg_state = sr;
    pthread_mutex_unlock(&g_lock);
    return TR_OK;
}

void
tr_signal_fini(tr_signal *sig)
{
    if (sig == NULL || sig->sg_state == NULL) {
        return;
    }
    sig_rt *sr = sig->sg_state;
    int s = sig->sg_signo;
    pthread_mutex_lock(&g_lock);
    TR__ASSERT(sr->sr_refs[s] > 0 && g_sig[s].refs > 0);
    if (--sr->sr_refs[s] == 0) {
        atomic_fetch_and(&g_slots[sr->sr_slot].s_mask, ~sig_bit(s));
        if (g_sig[s].mode == MODE_SIGNALFD) {
            sigset_t m = sr->sr_sfdmask;
            sigdelset(&m, s);
            (void)sfd_set(sr, &m); // shrinking an existing signalfd's mask
        }
    }
    if (--g_sig[s].refs == 0) {
        if (g_sig[s].mode == MODE_HANDLER) {
            handler_restore(s);
        }
        g_sig[s].mode = MODE_NONE;
    }
    pthread_mutex_unlock(&g_lock);
    sig->sg_state = NULL;
}

// ---------------------------------------------------------------------------
// Waiting.

// take completes a wait if the counter moved past the snapshot.
static bool
take(tr_signal *sig, uint64_t *count)
{
    uint64_t c = atomic_load(&g_count[sig->sg_signo]);
    if (c == sig->sg_seen) {
        return false;
    }
    *count = c - sig->sg_seen;
    sig->sg_seen = c;
    return true;
}

// drain_eventfd reads the eventfd; true when it held deliveries.
static bool
drain_eventfd(int fd)
{
    uint64_t v;
    ssize_t r;
    do {
        r = read(fd, &v, sizeof v);
    } while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof v;
}

static void
drain_signalfd(int fd)
{
    struct signalfd_siginfo buf[8];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return;
        }
        size_t n = (size_t)r / sizeof buf[0];
        for (size_t i = 0; i < n; i++) {
            int s = (int)buf[i].ssi_signo;
            if (s > 0 && s < NSIGS) {
                deliver(s);
            }
        }
        if (n < sizeof buf / sizeof buf[0]) {
            return;
        }
    }
}

// arm drains io, forgets its read readiness unless an event newer than the
// one seen before the drain arrived, and registers wk. Returns true when wk
// is registered (or io is closed: only in tr_rt_free, where nobody waits),
// false when io became ready again meanwhile (drain again).
static bool
arm(tr_io *io, bool is_sfd, tr_waker wk)
{
    uint64_t r = tr__io_ready(io);
    if (r & TR__RD_CLOSED) {
        return true;
    }
    // The descriptor is closed only by tr_rt_free, after every task.
    int fd = tr_io_fd(io);
    if (is_sfd) {
        drain_signalfd(fd); // delivers to the eventfds, which wake waiters
    } else if (drain_eventfd(fd)) {
        // We took the reactor's edge: wake the others (see the notes).
        tr__io_wake_all(io);
    }
    tr_io_clear_ready(io, TR_IO_READ, (uint32_t)((r & TR__RD_TICK_MASK) >> TR__RD_TICK_SHIFT));
    if (tr__io_wait(io, TR_IO_READ, wk)) {
        return true;
    }
    return (tr__io_ready(io) & TR__RD_CLOSED) != 0;
}

// tr__signal_poll is tr_signal_wait with an explicit waker and no budget:
// true with *count when the signal came, false when wk is registered to be
// woken at the next delivery. For process.c (its SIGCHLD fallback), which
// may pass a waker of its own; the caller serialises uses of one sig.
bool
tr__signal_poll(tr_signal *sig, tr_waker wk, uint64_t *count)
{
    sig_rt *sr = sig->sg_state;
    TR__ASSERT(sr != NULL);
    for (;;) {
        if (take(sig, count)) {
            return true;
        }
        if (!arm(sr->sr_evio, false, wk)) {
            continue;
        }
        tr_io *sfd = atomic_load_explicit(&sr->sr_sfdio, memory_order_acquire);
        if (sfd != NULL && !arm(sfd, true, wk)) {
            continue;
        }
        // The second look (see the design notes).
        return take(sig, count);
    }
}

tr_poll
tr_signal_wait(tr_signal *sig, tr_cx *cx, uint64_t *count)
{
    TR__ASSERT(sig != NULL && sig->sg_state != NULL);
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    return tr__signal_poll(sig, tr_cx_waker(cx), count) ? TR_READY : TR_PENDING;
}

// ---------------------------------------------------------------------------
// For process.c and the tests.

// tr__signal_handled adds to *set every signal troupe has a handler for
// (children get the default disposition for them).
void
tr__signal_handled(sigset_t *set)
{
    pthread_mutex_lock(&g_lock);
    for (int s = 1; s < NSIGS; s++) {
        if (g_sig[s].refs > 0 && g_sig[s].mode == MODE_HANDLER) {
            sigaddset(set, s);
        }
    }
    pthread_mutex_unlock(&g_lock);
}

// tr__signal_listeners returns the number of live tr_signal listeners of
// signo in the process (tests).
uint32_t
tr__signal_listeners(int signo)
{
    if (signo <= 0 || signo >= NSIGS) {
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    uint32_t n = g_sig[signo].refs;
    pthread_mutex_unlock(&g_lock);
    return n;
}
