// Design notes.
//
// Regular-file IO (troupe/fs.h). epoll refuses regular files (EPERM), so
// every operation here is a job of the blocking pool (io/blocking.c): an
// awaitable prepares a job that owns copies of everything it needs (the
// path, a duplicate of the descriptor made on the calling task's thread,
// a bounce buffer), the pool runs it, and the task collects the outcome.
// A cancelled task's job runs to its end with its own copies and its
// products (an opened descriptor, a read_all buffer) are released with
// the job, so the pool never reaches a reused descriptor number or freed
// memory (see blocking.c's notes on jobs and descriptors). io_uring would
// be a second implementation of the same awaitables.
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <troupe/fs.h>

#include "fs/fs.h"
#include "io/io.h"

typedef tr__job job;

// ---------------------------------------------------------------------------
// The operations, run on a pool thread. Each fills j_result/j_err and
// closes the duplicate descriptor it worked on.

static void
close_dup(job *j)
{
    (void)close(j->j_fd);
    j->j_fd = -1;
}

// write_full writes len bytes of buf (at off when off >= 0), retrying short
// writes and EINTR. Returns the bytes written; *e is 0 or the errno that
// stopped it.
static size_t
write_full(int fd, const unsigned char *buf, size_t len, off_t off, int *e)
{
    size_t done = 0;
    *e = 0;
    while (done < len) {
        ssize_t r = off >= 0 ? pwrite(fd, buf + done, len - done, off + (off_t)done)
                             : write(fd, buf + done, len - done);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            *e = errno;
            break;
        }
        if (r == 0) {
            *e = EIO; // a regular file never does this; do not spin
            break;
        }
        done += (size_t)r;
    }
    return done;
}

static void
run_read(job *j)
{
    ssize_t r;
    do {
        r = j->j_kind == TR__JOB_PREAD ? pread(j->j_fd, j->j_data, j->j_len, j->j_off)
                                       : read(j->j_fd, j->j_data, j->j_len);
    } while (r < 0 && errno == EINTR);
    j->j_err = r < 0 ? tr__errno(errno) : TR_OK;
    j->j_result.u64 = r < 0 ? 0 : (uint64_t)r;
    close_dup(j);
}

static void
run_write(job *j)
{
    int e;
    size_t n =
        write_full(j->j_fd, j->j_data, j->j_len, j->j_kind == TR__JOB_PWRITE ? j->j_off : -1, &e);
    // Progress first; the error shows on the next call (as write(2)).
    j->j_err = (e != 0 && n == 0) ? tr__errno(e) : TR_OK;
    j->j_result.u64 = n;
    close_dup(j);
}

static void
run_sync(job *j)
{
    int r = j->j_kind == TR__JOB_FSYNC ? fsync(j->j_fd) : fdatasync(j->j_fd);
    j->j_err = r < 0 ? tr__errno(errno) : TR_OK;
    close_dup(j);
}

static void
run_open(job *j)
{
    int fd;
    do {
        fd = open(j->j_path, j->j_flags | O_CLOEXEC, j->j_mode);
    } while (fd < 0 && errno == EINTR);
    j->j_err = fd < 0 ? tr__errno(errno) : TR_OK;
    j->j_fd = fd; // the job owns it until the joiner takes it
}

static void
run_close(job *j)
{
    int r = close(j->j_fd);
    // EINTR: Linux has released the descriptor; report success.
    j->j_err = (r < 0 && errno != EINTR) ? tr__errno(errno) : TR_OK;
    j->j_fd = -1;
}

static void
run_read_all(job *j)
{
    // j_len is the limit; keep max + 2 (content, one past, the NUL) in range.
    size_t max = j->j_len < SIZE_MAX - 2 ? j->j_len : SIZE_MAX - 2;
    unsigned char *buf = NULL;
    size_t len = 0;
    tr_err err = TR_OK;
    int fd;
    do {
        fd = open(j->j_path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        j->j_err = tr__errno(errno);
        return;
    }
    j->j_fd = fd;
    // The size from fstat is a first guess (+1 sees EOF without a regrow);
    // /proc files say 0 and a file may grow while we read.
    struct stat sb;
    size_t cap = 4096;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0) {
        if ((uint64_t)sb.st_size > max) {
            err = TR_ETOOBIG;
            goto out;
        }
        cap = (size_t)sb.st_size + 1;
    }
    if (cap > max + 1) {
        cap = max + 1;
    }
    buf = malloc(cap + 1); // + the NUL
    if (buf == NULL) {
        err = TR_ENOMEM;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                err = TR_ETOOBIG; // read max + 1 bytes
                goto out;
            }
            size_t ncap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            unsigned char *nbuf = realloc(buf, ncap + 1);
            if (nbuf == NULL) {
                err = TR_ENOMEM;
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            err = tr__errno(errno);
            goto out;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    j->j_out = buf; // the job owns it until the joiner takes it
    j->j_out_len = len;
    buf = NULL;
out:
    free(buf);
    close_dup(j);
    j->j_err = err;
}

static void
run_write_all(job *j)
{
    int oflags = O_WRONLY | O_CREAT | O_CLOEXEC;
    oflags |= (j->j_flags & TR_FILE_APPEND) ? O_APPEND : O_TRUNC;
    if (j->j_flags & TR_FILE_EXCL) {
        oflags |= O_EXCL;
    }
    int fd;
    do {
        fd = open(j->j_path, oflags, j->j_mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        j->j_err = tr__errno(errno);
        return;
    }
    int e = 0;
    (void)write_full(fd, j->j_out, j->j_out_len, -1, &e);
    if (e == 0 && (j->j_flags & TR_FILE_SYNC) && fsync(fd) < 0) {
        e = errno;
    }
    // close reports late write errors (NFS, some quotas); keep the first.
    if (close(fd) < 0 && errno != EINTR && e == 0) {
        e = errno;
    }
    j->j_err = tr__errno(e);
}

// run_of names the operation of a job kind.
static void (*run_of(int kind))(job *j)
{
    switch (kind) {
    case TR__JOB_OPEN:
        return run_open;
    case TR__JOB_READ:
    case TR__JOB_PREAD:
        return run_read;
    case TR__JOB_WRITE:
    case TR__JOB_PWRITE:
        return run_write;
    case TR__JOB_FSYNC:
    case TR__JOB_FDATASYNC:
        return run_sync;
    case TR__JOB_CLOSE:
        return run_close;
    case TR__JOB_READ_ALL:
        return run_read_all;
    case TR__JOB_WRITE_ALL:
        return run_write_all;
    default:
        tr__panic("fs: bad job kind %d", kind);
    }
}

// ---------------------------------------------------------------------------
// The awaitables (troupe/fs.h).

// dup_fd makes the job's own descriptor for fd (see the design notes).
static tr_err
dup_fd(int fd, int *out)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
        return tr__errno(errno);
    }
    *out = d;
    return TR_OK;
}

static job *
path_job(int kind, const char *path, size_t extra_before)
{
    size_t plen = strlen(path) + 1;
    job *j = tr__job_new(kind, extra_before + plen, run_of(kind));
    j->j_path = (char *)j->j_data + extra_before;
    memcpy(j->j_path, path, plen);
    return j;
}

tr_poll
tr_file_open(tr_blocking_op *op, tr_cx *cx, const char *path, int flags, mode_t mode, int *fd,
             tr_err *err)
{
    job *j;
    switch (tr__blocking_step(op, cx, TR__JOB_OPEN, &j)) {
    case TR__STEP_PENDING:
        return TR_PENDING;
    case TR__STEP_BAD:
        *fd = -1;
        *err = TR_EINVAL;
        return TR_READY;
    case TR__STEP_START:
        if (path == NULL) {
            *fd = -1;
            *err = TR_EINVAL;
            return TR_READY;
        }
        j = path_job(TR__JOB_OPEN, path, 0);
        j->j_flags = flags;
        j->j_mode = mode;
        *fd = -1;
        return tr__blocking_launch(op, cx, j, err);
    case TR__STEP_DONE:
        break;
    }
    *err = tr__blocking_status(j);
    *fd = -1;
    if (*err == TR_OK) {
        *fd = j->j_fd; // handed over
        j->j_fd = -1;
    }
    tr__blocking_release(op, j);
    return TR_READY;
}

// rw_poll is read, pread, write and pwrite.
static tr_poll
rw_poll(tr_blocking_op *op, tr_cx *cx, int kind, int fd, void *rbuf, const void *wbuf, size_t len,
        off_t off, size_t *n, tr_err *err)
{
    job *j;
    switch (tr__blocking_step(op, cx, kind, &j)) {
    case TR__STEP_PENDING:
        return TR_PENDING;
    case TR__STEP_BAD:
        *n = 0;
        *err = TR_EINVAL;
        return TR_READY;
    case TR__STEP_START: {
        *n = 0;
        bool positioned = kind == TR__JOB_PREAD || kind == TR__JOB_PWRITE;
        if ((len > 0 && rbuf == NULL && wbuf == NULL) || (positioned && off < 0)) {
            *err = TR_EINVAL;
            return TR_READY;
        }
        int d = -1;
        tr_err e = dup_fd(fd, &d);
        if (e != TR_OK) {
            *err = e;
            return TR_READY;
        }
        if (len == 0) {
            // Nothing to move; the dup has checked fd.
            (void)close(d);
            *err = TR_OK;
            return TR_READY;
        }
        if (len > TR_FILE_MAX_CHUNK) {
            len = TR_FILE_MAX_CHUNK;
        }
        j = tr__job_new(kind, len, run_of(kind));
        j->j_fd = d;
        j->j_len = len;
        j->j_off = off;
        if (wbuf != NULL) {
            memcpy(j->j_data, wbuf, len);
        }
        return tr__blocking_launch(op, cx, j, err);
    }
    case TR__STEP_DONE:
        break;
    }
    *err = tr__blocking_status(j);
    *n = 0;
    if (*err == TR_OK) {
        *n = (size_t)j->j_result.u64;
        if (rbuf != NULL && *n > 0) {
            memcpy(rbuf, j->j_data, *n);
        }
    }
    tr__blocking_release(op, j);
    return TR_READY;
}

tr_poll
tr_file_read(tr_blocking_op *op, tr_cx *cx, int fd, void *buf, size_t len, size_t *n, tr_err *err)
{
    return rw_poll(op, cx, TR__JOB_READ, fd, buf, NULL, len, 0, n, err);
}

tr_poll
tr_file_pread(tr_blocking_op *op, tr_cx *cx, int fd, void *buf, size_t len, off_t off, size_t *n,
              tr_err *err)
{
    return rw_poll(op, cx, TR__JOB_PREAD, fd, buf, NULL, len, off, n, err);
}

tr_poll
tr_file_write(tr_blocking_op *op, tr_cx *cx, int fd, const void *buf, size_t len, size_t *n,
              tr_err *err)
{
    return rw_poll(op, cx, TR__JOB_WRITE, fd, NULL, buf, len, 0, n, err);
}

tr_poll
tr_file_pwrite(tr_blocking_op *op, tr_cx *cx, int fd, const void *buf, size_t len, off_t off,
               size_t *n, tr_err *err)
{
    return rw_poll(op, cx, TR__JOB_PWRITE, fd, NULL, buf, len, off, n, err);
}

// fd_poll is fsync, fdatasync and close: a descriptor in, an error out.
static tr_poll
fd_poll(tr_blocking_op *op, tr_cx *cx, int kind, int fd, tr_err *err)
{
    job *j;
    switch (tr__blocking_step(op, cx, kind, &j)) {
    case TR__STEP_PENDING:
        return TR_PENDING;
    case TR__STEP_BAD:
        *err = TR_EINVAL;
        return TR_READY;
    case TR__STEP_START: {
        int d = fd;
        if (kind != TR__JOB_CLOSE) {
            tr_err e = dup_fd(fd, &d);
            if (e != TR_OK) {
                *err = e;
                return TR_READY;
            }
        } else if (fd < 0) {
            *err = TR_EBADF;
            return TR_READY;
        }
        j = tr__job_new(kind, 0, run_of(kind));
        // Close: fd is the job's now. If the job cannot be queued, freeing
        // it closes fd, so the descriptor is gone whatever the outcome.
        j->j_fd = d;
        return tr__blocking_launch(op, cx, j, err);
    }
    case TR__STEP_DONE:
        break;
    }
    *err = tr__blocking_status(j);
    tr__blocking_release(op, j);
    return TR_READY;
}

tr_poll
tr_file_fsync(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err)
{
    return fd_poll(op, cx, TR__JOB_FSYNC, fd, err);
}

tr_poll
tr_file_fdatasync(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err)
{
    return fd_poll(op, cx, TR__JOB_FDATASYNC, fd, err);
}

tr_poll
tr_file_close(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err)
{
    return fd_poll(op, cx, TR__JOB_CLOSE, fd, err);
}

tr_poll
tr_file_read_all(tr_blocking_op *op, tr_cx *cx, const char *path, size_t max, void **data,
                 size_t *len, tr_err *err)
{
    job *j;
    switch (tr__blocking_step(op, cx, TR__JOB_READ_ALL, &j)) {
    case TR__STEP_PENDING:
        return TR_PENDING;
    case TR__STEP_BAD:
        *data = NULL;
        *len = 0;
        *err = TR_EINVAL;
        return TR_READY;
    case TR__STEP_START:
        *data = NULL;
        *len = 0;
        if (path == NULL) {
            *err = TR_EINVAL;
            return TR_READY;
        }
        j = path_job(TR__JOB_READ_ALL, path, 0);
        j->j_len = max == 0 ? TR_FILE_READ_ALL_MAX : max;
        return tr__blocking_launch(op, cx, j, err);
    case TR__STEP_DONE:
        break;
    }
    *err = tr__blocking_status(j);
    *data = NULL;
    *len = 0;
    if (*err == TR_OK) {
        *data = j->j_out; // handed over
        *len = j->j_out_len;
        j->j_out = NULL;
    }
    tr__blocking_release(op, j);
    return TR_READY;
}

tr_poll
tr_file_write_all(tr_blocking_op *op, tr_cx *cx, const char *path, const void *data, size_t len,
                  mode_t mode, unsigned flags, tr_err *err)
{
    job *j;
    switch (tr__blocking_step(op, cx, TR__JOB_WRITE_ALL, &j)) {
    case TR__STEP_PENDING:
        return TR_PENDING;
    case TR__STEP_BAD:
        *err = TR_EINVAL;
        return TR_READY;
    case TR__STEP_START: {
        if (path == NULL || (len > 0 && data == NULL) ||
            (flags & ~(TR_FILE_SYNC | TR_FILE_APPEND | TR_FILE_EXCL)) != 0) {
            *err = TR_EINVAL;
            return TR_READY;
        }
        // The copy is as large as the caller's data: malloc, so that a
        // size the machine cannot hold is an error rather than an abort.
        void *copy = malloc(len > 0 ? len : 1);
        if (copy == NULL) {
            *err = TR_ENOMEM;
            return TR_READY;
        }
        if (len > 0) {
            memcpy(copy, data, len);
        }
        j = path_job(TR__JOB_WRITE_ALL, path, 0);
        j->j_out = copy; // freed with the job
        j->j_out_len = len;
        j->j_mode = mode;
        j->j_flags = (int)flags;
        return tr__blocking_launch(op, cx, j, err);
    }
    case TR__STEP_DONE:
        break;
    }
    *err = tr__blocking_status(j);
    tr__blocking_release(op, j);
    return TR_READY;
}
