// troupe/signal.h: awaitable process signals. A task waits for "signal N"
// through a tr_signal embedded in its state; the wait completes when the
// signal has been delivered since the previous completion (or since
// tr_signal_init), and reports how many deliveries that was.
//
// Delivery. By default troupe installs one process-wide handler per signal
// (sigaction, SA_RESTART | SA_SIGINFO; the handler that was there before is
// still called after ours, unless it was SIG_DFL or SIG_IGN). The handler
// is async-signal-safe: it bumps a per-signal counter and writes the eventfd
// of every runtime that listens to that signal, which wakes the runtime's
// reactor; the waiting tasks then compare the counter with their snapshot.
// This works whatever the program's threads (nng's included) do with their
// signal masks, as long as at least one thread leaves the signal unblocked.
//
// signalfd mode (TR_SIGNAL_SIGNALFD) is an explicit opt-in for programs that
// block the signal in every thread, such as a daemon whose main() calls
// pthread_sigmask(SIG_BLOCK, ...) before it starts any thread (the runtime's
// workers then inherit the mask). troupe then installs no handler: each
// listening runtime reads the signal from a signalfd. Only signals sent to
// the process (kill(2), a terminal, systemd) are seen that way: a signal
// sent to one thread (raise, pthread_kill) stays pending on that thread. A
// signal uses one mode at a time in the whole process: mixing the two for
// one signal fails with TR_EBUSY. Children spawned by troupe/process.h get
// an empty signal mask whatever the mode.
//
// Several runtimes: every runtime that listens to a signal sees every
// delivery of it (a broadcast, not a work queue), and so does every
// tr_signal of each runtime. A runtime takes one of TR_SIGNAL_MAX_RUNTIMES
// process-wide slots at its first tr_signal_init (troupe/process.h's SIGCHLD
// fallback counts) and keeps it until tr_rt_free.
//
// Counting: the count is the number of times the signal was delivered since
// the previous completion. The kernel merges a standard signal that arrives
// while the same signal is still pending, so a burst may count as fewer
// deliveries than kill(2) calls, but a delivery is never lost: a signal that
// arrives between two waits completes the next wait at once.
//
// Disposition: the handler is installed by the first tr_signal_init of a
// signal in the process and the previous disposition is restored when the
// last tr_signal of that signal is dropped. Do not change the disposition of
// a signal while troupe listens to it (tasks would no longer see it).
//
// Not waitable: SIGKILL and SIGSTOP (the kernel never lets a program catch
// them) and the synchronous fault signals SIGSEGV, SIGBUS, SIGFPE and
// SIGILL (a handler that returns would re-run the faulting instruction):
// tr_signal_init refuses them with TR_EINVAL.
#ifndef TROUPE_SIGNAL_H
#define TROUPE_SIGNAL_H

#include <stdint.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// The most runtimes that may use signals at once (see above).
#define TR_SIGNAL_MAX_RUNTIMES 64

// tr_signal_init flags.
enum {
    // Read the signal from a signalfd instead of installing a handler. The
    // signal must already be blocked in the calling thread (and, for it to
    // work, in every thread of the process): TR_EINVAL otherwise.
    TR_SIGNAL_SIGNALFD = 1u << 0,
};

// A listener for one signal, for one task at a time. Embed it in the task
// state. Every field is private. A zeroed tr_signal is inactive
// (tr_signal_fini on it is a no-op). It is an object with a lifecycle
// (tr_signal_init takes a process-wide slot and may install a handler), so
// it is released with tr_signal_fini, not abandoned: a pending
// tr_signal_wait holds nothing and needs no _abandon.
typedef struct tr_signal {
    void *sg_state;    // private: the runtime's signal state, NULL when inactive
    uint64_t sg_seen;  // private: the delivery counter at the last completion
    int sg_signo;      // private
    unsigned sg_flags; // private: tr_signal_init's flags
} tr_signal;

_Static_assert(sizeof(tr_signal) == sizeof(void *) + sizeof(uint64_t) + 8,
               "tr_signal: a pointer, a counter and two ints");

// tr_signal_init starts listening to signal signo for runtime rt and takes
// the counter snapshot: every delivery from now on is seen by the next
// tr_signal_wait. Installs the process-wide handler on first use (see the
// header comment). Any thread. Errors: TR_EINVAL for a signal that cannot
// be waited (see above), an out-of-range number, or (TR_SIGNAL_SIGNALFD) a
// signal the calling thread does not block; TR_EBUSY when the signal is
// already used in the other mode; TR_EEXHAUSTED when
// TR_SIGNAL_MAX_RUNTIMES other runtimes listen already; a system error from
// eventfd/signalfd/sigaction. On error sig stays inactive.
TR_API tr_err tr_signal_init(tr_signal *sig, tr_rt *rt, int signo, unsigned flags);

// tr_signal_wait waits for the signal: TR_READY with *count (>= 1) the
// number of deliveries since the previous completion or tr_signal_init; or
// TR_PENDING, the task being woken at the next delivery. It never fails,
// so it has no error out-parameter. A leaf operation:
// charges the budget once. From a task of the runtime sig was initialised
// for. Cancel-safe: a task cancelled at this await loses nothing (the
// deliveries stay counted for the next wait, if the op is kept); its drop
// function calls tr_signal_fini.
TR_API tr_poll tr_signal_wait(tr_signal *sig, tr_cx *cx, uint64_t *count);

// tr_signal_fini stops listening and makes sig inactive; when it was the
// last listener of its signal in the process, the previous disposition is
// restored (handler mode). Idempotent; any thread; call it from the drop
// function of the task that embeds sig, and before tr_rt_free for a
// tr_signal kept outside a task.
TR_API void tr_signal_fini(tr_signal *sig);

TR_END_DECLS

#endif
