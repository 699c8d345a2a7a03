// troupe/err.h: the one error type of libtroupe. Fallible functions return a
// tr_err (TR_OK is 0) and hand results back through out parameters.
//
// Would block: every try_ function that would have had to wait returns
// TR_EAGAIN (a channel full or empty, a lock held, a child still running).
// TR_EFULL, TR_EEMPTY and TR_EBUSY name other conditions: a fixed table
// that is full (TR_EFULL: all runtime-local keys are taken), nothing left at
// all (TR_EEMPTY: a group with no member), something already in use
// (TR_EBUSY: an op not idle, a clock or signal taken in another mode).
#ifndef TROUPE_ERR_H
#define TROUPE_ERR_H

#include <troupe/common.h>

TR_BEGIN_DECLS

// X(name, text). The order is the ABI: append only.
#define TR_ERRORS(X)                                                    \
    X(TR_OK, "success")                                                 \
    X(TR_EINVAL, "invalid argument")                                    \
    X(TR_ENOMEM, "out of memory")                                       \
    X(TR_ESHUTDOWN, "runtime is shutting down or shut down")            \
    X(TR_EEXHAUSTED, "task pool exhausted")                             \
    X(TR_ECANCELED, "task was cancelled")                               \
    X(TR_ENOTFOUND, "no such task (stale or unknown id)")               \
    X(TR_EFINISHED, "task had already finished")                        \
    X(TR_EDEADLOCK, "blocking call on a runtime worker would deadlock") \
    X(TR_ECLOSED, "closed")                                             \
    X(TR_EFULL, "no room left")                                         \
    X(TR_EEMPTY, "nothing left")                                        \
    X(TR_ETIMEDOUT, "timed out")                                        \
    X(TR_EAGAIN, "would block, try again")                              \
    X(TR_EBUSY, "already in use")                                       \
    X(TR_ENOTSUP, "not supported")                                      \
    X(TR_ETOOBIG, "too big")                                            \
    X(TR_EPERM, "operation not permitted")                              \
    X(TR_ENOENT, "no such file or directory")                           \
    X(TR_EEXIST, "already exists")                                      \
    X(TR_EBADF, "bad file descriptor")                                  \
    X(TR_EPIPE, "broken pipe")                                          \
    X(TR_ECONNREFUSED, "connection refused")                            \
    X(TR_ECONNRESET, "connection reset by peer")                        \
    X(TR_EADDRINUSE, "address in use")                                  \
    X(TR_EIO, "input/output error")                                     \
    X(TR_ESYSTEM, "unexpected system error")                            \
    X(TR_EEOF, "unexpected end of file")                                \
    X(TR_ECONNABORTED, "connection aborted")                            \
    X(TR_ENOTCONN, "not connected")                                     \
    X(TR_EADDRNOTAVAIL, "address not available")                        \
    X(TR_ENETUNREACH, "network unreachable")                            \
    X(TR_EHOSTUNREACH, "host unreachable")                              \
    X(TR_ENOSPC, "no space left on device")                             \
    X(TR_ECHILD, "no such child process")                               \
    X(TR_ENOTSOCK, "not a socket")                                      \
    X(TR_EISDIR, "is a directory")                                      \
    X(TR_ENAME, "name resolution failed")                               \
    X(TR_EMFILE, "too many open files")

typedef enum tr_err {
#define TR__ERR_ENUM(name, text) name,
    TR_ERRORS(TR__ERR_ENUM)
#undef TR__ERR_ENUM
        TR__ERR_COUNT
} tr_err;

// tr_strerror returns a static, human-readable text for err (any thread).
TR_API const char *tr_strerror(tr_err err);

// tr_err_from_errno maps an errno value to the closest tr_err (TR_ESYSTEM
// when none is close). Any thread.
TR_API tr_err tr_err_from_errno(int e);

// tr_error_detail says, for the calling thread, what was wrong the last
// time tr_rt_new, tr_task_new or tr_spawn failed on it: which setting or
// field, which value, and what is allowed (e.g. "TROUPE_WORKERS=999: not a
// number of workers (0 for one per core, or 1 to 255)"). Read it right
// after the failing call; a successful call does not clear it. The text
// lives in thread-local storage: never free it.
TR_API const char *tr_error_detail(void);

// tr_err_name returns the symbolic name of err ("TR_ECLOSED"), for logs.
TR_API const char *tr_err_name(tr_err err);

TR_END_DECLS

#endif
