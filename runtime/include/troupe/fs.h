// troupe/fs.h: regular-file IO. epoll refuses regular files (EPERM), so
// each operation here is an awaitable that runs on the blocking pool of the
// polling task's runtime (troupe/blocking.h: its pool size, keep-alive and
// cancellation rules apply; an op is a tr_blocking_op).
#ifndef TROUPE_FS_H
#define TROUPE_FS_H

#include <sys/types.h>

#include <troupe/blocking.h>
#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// Regular-file IO on the pool of the polling task's runtime.
//
// Every function here is an awaitable with the same shape: pass the same op
// and arguments on every poll until TR_READY; op is then idle again and
// *err holds the outcome (errno values map through tr_err_from_errno: a
// full disk is TR_ENOSPC, a file too large for the process limit
// TR_ETOOBIG). All are leaf operations. A job that takes a descriptor works
// on a duplicate made on the first poll, so fd may be closed once the
// operation is READY or abandoned without the pool ever reaching a reused
// descriptor number; a bad fd fails at once with TR_EBADF. Data moves
// through the job's own buffer: the caller's buffer is only read on the
// first poll (writes) or written on the final one (reads), so it may live
// in the task's state. Cancellation: the drop function calls
// tr_blocking_abandon(&op).

// The most bytes one tr_file_read/pread/write/pwrite moves (larger requests
// are short).
#define TR_FILE_MAX_CHUNK ((size_t)2 << 20)

// tr_file_open opens path (copied) with open(2) flags (O_CLOEXEC is added)
// and mode (with O_CREAT); *fd receives the descriptor, or -1 on error.
// Cancelled: a descriptor opened after all is closed (a file that O_CREAT
// created stays); an open not yet started never happens.
TR_API tr_poll tr_file_open(tr_blocking_op *op, tr_cx *cx, const char *path, int flags, mode_t mode,
                            int *fd, tr_err *err);

// tr_file_read reads up to len bytes (at most TR_FILE_MAX_CHUNK) at fd's
// file position into buf; *n is the count, 0 at end of file. Cancelled: the
// bytes read are discarded, but the file position has moved past them.
TR_API tr_poll tr_file_read(tr_blocking_op *op, tr_cx *cx, int fd, void *buf, size_t len, size_t *n,
                            tr_err *err);

// tr_file_pread is tr_file_read at offset off (the file position is not
// used or moved). Cancelled: nothing is delivered.
TR_API tr_poll tr_file_pread(tr_blocking_op *op, tr_cx *cx, int fd, void *buf, size_t len,
                             off_t off, size_t *n, tr_err *err);

// tr_file_write writes up to len bytes (at most TR_FILE_MAX_CHUNK; buf is
// copied on the first poll) at fd's file position, retrying short writes;
// *n is the count. When an error follows partial progress, *n is the
// progress with TR_OK and the next call reports the error. Cancelled: a
// write that had started completes (moving the file position); one not
// yet started never happens.
TR_API tr_poll tr_file_write(tr_blocking_op *op, tr_cx *cx, int fd, const void *buf, size_t len,
                             size_t *n, tr_err *err);

// tr_file_pwrite is tr_file_write at offset off (the file position is not
// used or moved). Cancelled: as tr_file_write.
TR_API tr_poll tr_file_pwrite(tr_blocking_op *op, tr_cx *cx, int fd, const void *buf, size_t len,
                              off_t off, size_t *n, tr_err *err);

// tr_file_fsync flushes fd's data and metadata to the device (fsync(2)).
// Cancelled: a flush that had started completes; one not yet started is
// skipped.
TR_API tr_poll tr_file_fsync(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err);

// tr_file_fdatasync flushes fd's data (fdatasync(2)). Cancelled: as fsync.
TR_API tr_poll tr_file_fdatasync(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err);

// tr_file_close closes fd on the pool (close can block, on NFS for one, and
// report a late write error). Ownership of fd passes to the operation on
// the first poll: it is closed exactly once whatever happens, including
// when the task is cancelled, so never close it again. The error (if any)
// is close's; the descriptor is gone either way.
TR_API tr_poll tr_file_close(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err);

// The limit tr_file_read_all applies when max is 0.
#define TR_FILE_READ_ALL_MAX ((size_t)1 << 30)

// tr_file_read_all reads the whole file at path (copied) into a new buffer:
// *data (free it with free(); one extra NUL byte follows the content, so
// text can be used as a string) and *len; NULL and 0 on error. TR_ETOOBIG
// when the file holds more than max bytes (0: TR_FILE_READ_ALL_MAX),
// TR_ENOMEM when the buffer cannot be had. Cancelled: the buffer is freed.
TR_API tr_poll tr_file_read_all(tr_blocking_op *op, tr_cx *cx, const char *path, size_t max,
                                void **data, size_t *len, tr_err *err);

// Flags of tr_file_write_all.
#define TR_FILE_SYNC 0x1u   // fsync before closing
#define TR_FILE_APPEND 0x2u // append instead of truncating
#define TR_FILE_EXCL 0x4u   // fail with TR_EEXIST if path exists

// tr_file_write_all writes len bytes of data (copied on the first poll;
// TR_ENOMEM if that copy cannot be had) to path, creating it with mode if
// needed and truncating it (see the flags), then closes it. A close error
// is reported when nothing failed before it. Cancelled: once started, the
// whole file is written and closed all the same; not yet started, nothing
// happens.
TR_API tr_poll tr_file_write_all(tr_blocking_op *op, tr_cx *cx, const char *path, const void *data,
                                 size_t len, mode_t mode, unsigned flags, tr_err *err);

TR_END_DECLS

#endif
