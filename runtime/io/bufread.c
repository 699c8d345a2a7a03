// Design notes.
//
// The reader's buffer is one fixed block: bytes [br_start, br_end) are read
// and not yet handed out. Reads go into [br_end, br_cap - 1): the last byte
// is kept so that tr_bufread_line can always write a NUL after a line, even
// a last line without a newline that ends at br_end. The buffer is moved
// back to its start (compacted) only when more bytes are needed and the
// free tail is less than half of it, so a memmove copies at most the one
// partial record, and at most once per half buffer of input.
//
// read_until remembers how far it has searched (br_scan), so a record that
// arrives in many small pieces is searched once in total, not once per
// piece (which would be quadratic).
//
// All state lives in the tr_bufread or the caller's op struct: nothing is
// registered while an awaitable is pending except io.c's waker, so
// cancellation needs no undo (see the header). End of file is not latched:
// each call that needs bytes reads again (a tty can go on after ^D).
#include <string.h>

#include <troupe/bufread.h>

#include "base/base.h"
#include "io/io.h"

// usable: how many bytes the buffer holds (one is kept for the NUL).
static inline size_t
usable(const tr_bufread *br)
{
    return br->br_cap - 1;
}

tr_err
tr_bufread_init(tr_bufread *br, tr_io *io, void *buf, size_t cap)
{
    if (br == NULL || io == NULL) {
        return TR_EINVAL;
    }
    bool owned = false;
    if (buf == NULL) {
        if (cap == 0) {
            cap = TR_BUFREAD_DEFAULT_CAP;
        }
        if (cap < TR_BUFREAD_MIN_CAP) {
            return TR_EINVAL;
        }
        buf = tr__alloc(cap);
        owned = true;
    } else if (cap < TR_BUFREAD_MIN_CAP) {
        return TR_EINVAL;
    }
    memset(br, 0, sizeof(*br));
    br->br_io = io;
    br->br_buf = buf;
    br->br_cap = cap;
    br->br_owned = owned;
    return TR_OK;
}

void
tr_bufread_fini(tr_bufread *br)
{
    if (br == NULL) {
        return;
    }
    if (br->br_owned && br->br_buf != NULL) {
        tr__free(br->br_buf, br->br_cap);
    }
    memset(br, 0, sizeof(*br));
}

tr_io *
tr_bufread_io(const tr_bufread *br)
{
    return br->br_io;
}

size_t
tr_bufread_buffered(const tr_bufread *br)
{
    return br->br_end - br->br_start;
}

void
tr_bufread_consume(tr_bufread *br, size_t n)
{
    TR__ASSERT(n <= br->br_end - br->br_start);
    br->br_start += n;
    br->br_scan = br->br_scan > n ? br->br_scan - n : 0;
    if (br->br_start == br->br_end) {
        br->br_start = br->br_end = br->br_scan = 0;
    }
}

// fill_more reads once into the free tail (compacting first if it is
// small): TR_READY with *err TR_OK and *n the bytes added (0 at end of
// file), or *err the read error. The caller makes sure the buffer is not
// full of unreturned bytes.
static tr_poll
fill_more(tr_bufread *br, tr_cx *cx, size_t *n, tr_err *err)
{
    size_t cap = usable(br);
    if (br->br_start == br->br_end) {
        br->br_start = br->br_end = br->br_scan = 0;
    } else if (br->br_start > 0 && cap - br->br_end < cap / 2) {
        memmove(br->br_buf, br->br_buf + br->br_start, br->br_end - br->br_start);
        br->br_end -= br->br_start;
        br->br_start = 0;
    }
    TR__ASSERT(br->br_end < cap);
    if (tr_read(br->br_io, cx, br->br_buf + br->br_end, cap - br->br_end, n, err) == TR_PENDING) {
        return TR_PENDING;
    }
    br->br_end += *n; // 0 on an error
    return TR_READY;
}

tr_poll
tr_bufread_fill(tr_bufread *br, tr_cx *cx, const char **data, size_t *len, tr_err *err)
{
    if (br->br_start == br->br_end) {
        size_t n;
        if (fill_more(br, cx, &n, err) == TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            *data = NULL;
            *len = 0;
            return TR_READY;
        }
    }
    *data = br->br_buf + br->br_start;
    *len = br->br_end - br->br_start;
    *err = TR_OK;
    return TR_READY;
}

// take copies up to len buffered bytes into buf and consumes them.
static size_t
take(tr_bufread *br, void *buf, size_t len)
{
    size_t k = br->br_end - br->br_start;
    if (k > len) {
        k = len;
    }
    memcpy(buf, br->br_buf + br->br_start, k);
    tr_bufread_consume(br, k);
    return k;
}

tr_poll
tr_bufread_read(tr_bufread *br, tr_cx *cx, void *buf, size_t len, size_t *n, tr_err *err)
{
    if (len == 0 || br->br_start != br->br_end) {
        *n = take(br, buf, len);
        *err = TR_OK;
        return TR_READY;
    }
    if (len >= usable(br)) {
        // Nothing buffered and a large read: skip the copy.
        return tr_read(br->br_io, cx, buf, len, n, err);
    }
    size_t got;
    if (fill_more(br, cx, &got, err) == TR_PENDING) {
        return TR_PENDING;
    }
    *n = got == 0 ? 0 : take(br, buf, len);
    return TR_READY;
}

tr_poll
tr_bufread_read_exact(tr_bufread *br, tr_cx *cx, tr_io_op *op, void *buf, size_t len, size_t *n,
                      tr_err *err)
{
    while (op->iop_done < len) {
        char *dst = (char *)buf + op->iop_done;
        size_t want = len - op->iop_done;
        size_t k;
        if (br->br_start != br->br_end) {
            op->iop_done += take(br, dst, want);
            continue;
        }
        if (want >= usable(br)) {
            if (tr_read(br->br_io, cx, dst, want, &k, err) == TR_PENDING) {
                return TR_PENDING;
            }
            if (k > 0) {
                op->iop_done += k;
                continue;
            }
        } else if (fill_more(br, cx, &k, err) == TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            return tr__io_op_finish(op, n, err, *err);
        }
        if (k == 0) {
            return tr__io_op_finish(op, n, err, TR_EEOF);
        }
    }
    return tr__io_op_finish(op, n, err, TR_OK);
}

tr_poll
tr_bufread_read_until(tr_bufread *br, tr_cx *cx, int delim, size_t max, const char **data,
                      size_t *len, tr_err *err)
{
    if (max == 0 || max > usable(br)) {
        max = usable(br);
    }
    if (br->br_delim != delim) {
        br->br_delim = delim; // what was searched was searched for another byte
        br->br_scan = 0;
    }
    for (;;) {
        char *base = br->br_buf + br->br_start;
        size_t avail = br->br_end - br->br_start;
        size_t lim = avail < max ? avail : max;
        if (br->br_scan < lim) {
            char *p = memchr(base + br->br_scan, (unsigned char)delim, lim - br->br_scan);
            if (p != NULL) {
                size_t n = (size_t)(p - base) + 1;
                tr_bufread_consume(br, n);
                *data = base;
                *len = n;
                *err = TR_OK;
                return TR_READY;
            }
            br->br_scan = lim;
        }
        if (avail >= max) {
            *data = NULL;
            *len = 0;
            *err = TR_ETOOBIG;
            return TR_READY;
        }
        size_t n;
        if (fill_more(br, cx, &n, err) == TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            *data = NULL;
            *len = 0;
            return TR_READY;
        }
        if (n == 0) {
            // End of file: the partial record is the last one.
            base = br->br_buf + br->br_start;
            *data = avail == 0 ? NULL : base;
            *len = avail;
            *err = avail == 0 ? TR_EEOF : TR_OK;
            tr_bufread_consume(br, avail);
            return TR_READY;
        }
    }
}

tr_poll
tr_bufread_line(tr_bufread *br, tr_cx *cx, size_t max, const char **line, size_t *len, tr_err *err)
{
    const char *d;
    size_t n;
    if (tr_bufread_read_until(br, cx, '\n', max, &d, &n, err) == TR_PENDING) {
        return TR_PENDING;
    }
    if (*err != TR_OK) {
        *line = NULL;
        *len = 0;
        return TR_READY;
    }
    if (n > 0 && d[n - 1] == '\n') {
        n--;
        if (n > 0 && d[n - 1] == '\r') {
            n--;
        }
    }
    // d points into br_buf, and d + n is at most br_buf + br_cap - 1: the
    // byte kept for this NUL (or the consumed line ending).
    br->br_buf[(size_t)(d - br->br_buf) + n] = '\0';
    *line = d;
    *len = n;
    return TR_READY;
}

tr_poll
tr_bufread_copy(tr_bufread *br, tr_cx *cx, tr_io_op *op, tr_io *to, size_t *n, tr_err *err)
{
    for (;;) {
        size_t k;
        if (br->br_start == br->br_end) {
            if (fill_more(br, cx, &k, err) == TR_PENDING) {
                return TR_PENDING;
            }
            if (*err != TR_OK || k == 0) {
                return tr__io_op_finish(op, n, err, *err); // an error, or end of file (TR_OK)
            }
        }
        if (tr_write(to, cx, br->br_buf + br->br_start, br->br_end - br->br_start, &k, err) ==
            TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            return tr__io_op_finish(op, n, err, *err);
        }
        tr_bufread_consume(br, k);
        op->iop_done += k;
    }
}

// ---------------------------------------------------------------------------
// tr_copy.

// copy_done hands out the count and zeroes the op (the buffer's bytes are
// dropped: after an error nobody will write them).
static tr_poll
copy_done(tr_copy_op *op, size_t *n, tr_err *err, tr_err e)
{
    if (n != NULL) {
        *n = op->cp_done;
    }
    tr_copy_op_abandon(op);
    *err = e;
    return TR_READY;
}

tr_poll
tr_copy(tr_copy_op *op, tr_cx *cx, tr_io *from, tr_io *to, size_t *n, tr_err *err)
{
    for (;;) {
        size_t k;
        if (op->cp_start == op->cp_end) {
            if (tr_read(from, cx, op->cp_buf, sizeof op->cp_buf, &k, err) == TR_PENDING) {
                return TR_PENDING;
            }
            if (*err != TR_OK || k == 0) {
                return copy_done(op, n, err, *err); // an error, or end of file (TR_OK)
            }
            op->cp_start = 0;
            op->cp_end = (uint32_t)k;
        }
        if (tr_write(to, cx, op->cp_buf + op->cp_start, op->cp_end - op->cp_start, &k, err) ==
            TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            return copy_done(op, n, err, *err);
        }
        op->cp_start += (uint32_t)k;
        op->cp_done += k;
        if (op->cp_start == op->cp_end) {
            op->cp_start = op->cp_end = 0;
        }
    }
}
