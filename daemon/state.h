// state.h: trouped's state directory: one daemon per directory.
#ifndef TRD_STATE_H
#define TRD_STATE_H

#include <stddef.h>

#include <troupe/err.h>

// How long trd_state_lock waits for a lock whose recorded holder is gone.
#define TRD_STATE_LOCK_WAIT_MS 5000

// trd_state_lock makes state_dir (mode 0700) unless it exists, and takes an
// exclusive lock on state_dir/lock: flock(LOCK_EX | LOCK_NB), so it does
// not wait for a live trouped. It waits (up to TRD_STATE_LOCK_WAIT_MS) only
// when the trouped the file names has exited: then the holder is a child
// it was spawning when it died, between fork and exec, which lets go at
// its exec (the lock's descriptor is close-on-exec). Call it before opening the store or binding a
// socket: a second trouped on the same state then stops before it touches either. On TR_OK *fd_out
// is the lock's descriptor (O_CLOEXEC): keep it open for the life of the process (the lock goes
// with it), and the file holds the pid of the holder. TR_EBUSY: another process holds the lock; err
// names its pid (read from the file). Other errors (TR_EPERM, TR_ENOENT, …): the directory or the
// file cannot be made or opened; err says which. Blocks (file IO only). Any thread.
tr_err trd_state_lock(const char *state_dir, int *fd_out, char *err, size_t errlen);

#endif
