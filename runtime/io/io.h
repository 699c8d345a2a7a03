// io/io.h: the IO layer (README, Architecture): descriptors as tr_io
// (io.c), sockets and DNS (net.c), buffered reads (bufread.c), the
// blocking pool (blocking.c), signals (signal.c) and child processes
// (process.c), on top of the reactor's registrations. What its files share
// with each other and with the white-box tests is declared here.
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include every layer below it: base/base.h, task/task.h,
// sched/sched.h, exec/exec.h, reactor/reactor.h. No back-edge.
#ifndef TR_IO_IO_H
#define TR_IO_IO_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/blocking.h>
#include <troupe/process.h>
#include <troupe/signal.h>
#include <troupe/task.h>

#include "base/base.h"

// signal.c: tr__signal_poll is tr_signal_wait with an explicit waker and
// no budget: true with *count when the signal came, false when wk is
// registered to be woken at the next delivery. For process.c (its SIGCHLD
// fallback), which may pass a waker of its own; the caller serialises uses
// of one sig.
bool tr__signal_poll(tr_signal *sig, tr_waker wk, uint64_t *count) TR__HIDDEN;
// tr__signal_handled fills set with the signals troupe has handlers for.
void tr__signal_handled(sigset_t *set) TR__HIDDEN;
// tr__signal_rt_ensure creates rt's signal state if it does not exist yet:
// a module whose state uses signals calls it before it sets its own
// runtime-local slot, so that tr_rt_free (last set, first released)
// releases the user before the signals.
tr_err tr__signal_rt_ensure(tr_rt *rt) TR__HIDDEN;
// tr__signal_listeners counts the listeners of signo (tests).
uint32_t tr__signal_listeners(int signo) TR__HIDDEN;

// blocking.c, for the tests of the keep-alive: tr__blocking_wait_threads
// waits (at most timeout_ms) until rt's pool has at most n threads;
// returns whether it got there.
bool tr__blocking_wait_threads(tr_rt *rt, unsigned n, unsigned timeout_ms) TR__HIDDEN;

// process.c, for the tests: tr__process_force_fallback makes later spawns
// use SIGCHLD instead of a pidfd (on) or lets them try pidfd_open again
// (off); tr__process_has_pidfd reports whether p waits through a pidfd;
// tr__process_orphans returns how many freed children await reaping.
void tr__process_force_fallback(bool on) TR__HIDDEN;
bool tr__process_has_pidfd(const tr_process *p) TR__HIDDEN;
size_t tr__process_orphans(void) TR__HIDDEN;

#endif
