// Design notes. Allocation goes through tr__alloc/tr__free so that one place
// decides what out-of-memory means (abort: a runtime that cannot allocate a
// few bytes cannot report anything sensibly) and so that frees carry their
// size, which lets a future arena allocator skip size headers. Futexes are
// used directly: they are the cheapest way to park a thread on Linux, and the
// parker, the small mutex and blocking joins all build on them.
#include "base/base.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <troupe/task.h>

void
tr__panic_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "troupe: panic at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void
tr__bad_resume(const char *file, int line, int pc)
{
    if (pc == TR__DONE) {
        tr__panic_at(file, line, "task polled again after it finished");
    }
    tr__panic_at(file, line,
                 "task resumed at unknown point %d (the switch form of the await macros: a "
                 "TR_AWAIT inside a switch of its own)",
                 pc);
}

void *
tr__alloc(size_t sz)
{
    void *p = malloc(sz ? sz : 1);
    if (p == NULL) {
        tr__panic_at(__FILE__, __LINE__, "out of memory allocating %zu bytes", sz);
    }
    return p;
}

void *
tr__zalloc(size_t sz)
{
    void *p = calloc(1, sz ? sz : 1);
    if (p == NULL) {
        tr__panic_at(__FILE__, __LINE__, "out of memory allocating %zu bytes", sz);
    }
    return p;
}

void
tr__free(void *p, size_t sz)
{
    (void)sz;
    free(p);
}

tr_err
tr__errno(int e)
{
    switch (e) {
    case 0:
        return TR_OK;
    case EINVAL:
        return TR_EINVAL;
    case ENOMEM:
    case ENOBUFS:
        return TR_ENOMEM;
    case EAGAIN:
        return TR_EAGAIN;
    case ETIMEDOUT:
        return TR_ETIMEDOUT;
    case EBUSY:
        return TR_EBUSY;
    case EPERM:
    case EACCES:
        return TR_EPERM;
    case ENOENT:
        return TR_ENOENT;
    case EEXIST:
        return TR_EEXIST;
    case EBADF:
        return TR_EBADF;
    case EPIPE:
        return TR_EPIPE;
    case ECONNREFUSED:
        return TR_ECONNREFUSED;
    case ECONNRESET:
        return TR_ECONNRESET;
    case EADDRINUSE:
        return TR_EADDRINUSE;
    case EIO:
        return TR_EIO;
    case ENOSYS:
    case EOPNOTSUPP:
        return TR_ENOTSUP;
    case E2BIG:
    case EMSGSIZE:
    case EFBIG: // past RLIMIT_FSIZE or the file system's limit
        return TR_ETOOBIG;
    case ECANCELED:
        return TR_ECANCELED;
    case ECONNABORTED:
        return TR_ECONNABORTED;
    case ENOTCONN:
        return TR_ENOTCONN;
    case EADDRNOTAVAIL:
        return TR_EADDRNOTAVAIL;
    case ENETUNREACH:
    case ENETDOWN:
        return TR_ENETUNREACH;
    case EHOSTUNREACH:
    case EHOSTDOWN:
        return TR_EHOSTUNREACH;
    case ENOSPC:
    case EDQUOT:
        return TR_ENOSPC;
    case ECHILD:
        return TR_ECHILD;
    case ENOTSOCK:
        return TR_ENOTSOCK;
    case EISDIR:
        return TR_EISDIR;
    case EMFILE:
    case ENFILE:
        return TR_EMFILE;
    default:
        return TR_ESYSTEM;
    }
}

tr_err
tr_err_from_errno(int e)
{
    return tr__errno(e);
}

static const char *const err_text[] = {
#define TR__ERR_TEXT(name, text) text,
    TR_ERRORS(TR__ERR_TEXT)
#undef TR__ERR_TEXT
};

static const char *const err_name[] = {
#define TR__ERR_NAME(name, text) #name,
    TR_ERRORS(TR__ERR_NAME)
#undef TR__ERR_NAME
};

const char *
tr_strerror(tr_err err)
{
    if ((unsigned)err >= TR__ERR_COUNT) {
        return "unknown error";
    }
    return err_text[err];
}

const char *
tr_err_name(tr_err err)
{
    if ((unsigned)err >= TR__ERR_COUNT) {
        return "TR_E?";
    }
    return err_name[err];
}

_Atomic(tr__hook_fn) tr__test_hook;

static __thread char detail[256];

tr_err
tr__fail(tr_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    return err;
}

void
tr__name_list(char *buf, size_t len, size_t n, const char *(*name)(size_t i))
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && at < len; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
        int k = snprintf(buf + at, len - at, "%s%s", sep, name(i));
        if (k < 0) {
            break;
        }
        at += (size_t)k;
    }
}

void
tr__detail_clear(void)
{
    detail[0] = '\0';
}

const char *
tr_error_detail(void)
{
    return detail;
}

uint64_t
tr__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
tr__futex_wait(_Atomic uint32_t *word, uint32_t expect, uint64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns != UINT64_MAX) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
        ts.tv_nsec = (long)(timeout_ns % 1000000000u);
        tsp = &ts;
    }
    // EINTR, EAGAIN (value changed) and ETIMEDOUT all mean "look again".
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expect, tsp, NULL, 0);
}

void
tr__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void
tr__mutex_lock_slow(tr__mutex *m)
{
    // Mark the lock contended, then sleep until we take it in that state.
    // Pairs with the release exchange in tr__mutex_unlock.
    while (atomic_exchange_explicit(&m->m_word, 2, memory_order_acquire) != 0) {
        tr__futex_wait(&m->m_word, 2, UINT64_MAX);
    }
}
