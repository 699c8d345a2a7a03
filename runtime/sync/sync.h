// sync/sync.h: the synchronisation layer (README, Architecture): oneshot
// and bounded channels (oneshot.c, chan.c), semaphores, mutexes and
// notifies (sync.c), task groups (group.c) and select (select.c), all
// built on wakers; none of it blocks a thread.
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include every layer below it: base/base.h, task/task.h,
// sched/sched.h, exec/exec.h, reactor/reactor.h. No back-edge. Its files
// share nothing beyond this today.
#ifndef TR_SYNC_SYNC_H
#define TR_SYNC_SYNC_H

#include "base/base.h"

#endif
