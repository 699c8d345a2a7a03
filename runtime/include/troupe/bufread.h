// troupe/bufread.h: buffered reading and copying on top of troupe/io.h.
// A tr_bufread reads a tr_io in large chunks into a buffer and hands the
// bytes out by delimiter (tr_bufread_read_until), by text line
// (tr_bufread_line), by exact count (tr_bufread_read_exact) or as they come
// (tr_bufread_read, tr_bufread_fill); tr_copy and tr_bufread_copy move a
// whole stream from one tr_io to another until end of file.
//
// Memory is bounded: the buffer never grows. A delimited record or a line
// must fit in it (or in a smaller limit given per call), else the call
// fails with TR_ETOOBIG instead of reading without end.
//
// Ownership: the tr_bufread struct is the caller's (embed it in the task
// state); its buffer is either memory the caller passes in (e.g. an array
// in the same state) or a heap block that tr_bufread_init allocates and
// tr_bufread_fini frees. The reader borrows the tr_io: the caller keeps
// its reference and releases it after tr_bufread_fini.
//
// Threads: a reader is used by one task at a time (it is not locked), from
// a task of the runtime its tr_io belongs to. The awaitables take the same
// arguments on every poll until TR_READY.
//
// Cancellation: every awaitable here holds nothing outside the reader and
// its op struct while it is pending. Bytes read from the descriptor but
// not yet returned stay in the reader's buffer (a cancelled read_until or
// line loses nothing; the next call returns them); bytes a read_exact had
// copied out are counted in its op (tr_io_op_done). A copy counts in its op
// the bytes written to the destination (tr_io_op_done, tr_copy_op_done):
// with tr_bufread_copy the rest stays in the reader; with tr_copy the bytes
// read but not yet written are in the op and are lost with it. A cancelled
// task's drop only calls tr_bufread_fini (and releases its tr_io
// references).
#ifndef TROUPE_BUFREAD_H
#define TROUPE_BUFREAD_H

#include <sys/types.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/io.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// The buffer size tr_bufread_init uses for cap 0.
#define TR_BUFREAD_DEFAULT_CAP ((size_t)8192)
// The smallest buffer tr_bufread_init accepts.
#define TR_BUFREAD_MIN_CAP ((size_t)16)

// A buffered reader. Embed it in the task state.
typedef struct tr_bufread {
    tr_io *br_io;    // private: borrowed, the caller holds the reference
    char *br_buf;    // private: br_cap bytes; the last one is kept for a NUL
    size_t br_cap;   // private: size of br_buf
    size_t br_start; // private: first byte not yet handed out
    size_t br_end;   // private: end of the bytes read
    size_t br_scan;  // private: bytes after br_start already searched for br_delim
    int br_delim;    // private: the delimiter br_scan refers to
    bool br_owned;   // private: br_buf came from tr_bufread_init's allocation
} tr_bufread;

_Static_assert(sizeof(tr_bufread) == 7 * sizeof(void *), "tr_bufread: seven words");

// tr_bufread_init prepares br to read io. buf (cap bytes) is the caller's
// memory, which must outlive the reader; buf NULL makes the reader allocate
// cap bytes (cap 0: TR_BUFREAD_DEFAULT_CAP), freed by tr_bufread_fini.
// One byte of the buffer is kept for the NUL of tr_bufread_line, so a
// record or line holds at most cap - 1 bytes. TR_EINVAL for a NULL br or
// io, or a cap below TR_BUFREAD_MIN_CAP. Any thread; never blocks.
TR_API tr_err tr_bufread_init(tr_bufread *br, tr_io *io, void *buf, size_t cap);

// tr_bufread_fini frees the buffer if the reader allocated it; bytes still
// buffered are discarded and io is left as it is (not released). br may be
// initialised again. Idempotent on a zeroed or finished reader, so a drop
// function may call it unconditionally. Any thread, once no task uses br.
TR_API void tr_bufread_fini(tr_bufread *br);

// tr_bufread_io returns the tr_io the reader reads (borrowed: no reference
// is taken).
TR_API tr_io *tr_bufread_io(const tr_bufread *br);

// tr_bufread_buffered returns how many bytes are buffered, not yet handed
// out (readable without a system call).
TR_API size_t tr_bufread_buffered(const tr_bufread *br);

// tr_bufread_fill returns the buffered bytes, reading once from io if there
// are none: TR_READY with *err TR_OK, *data and *len the bytes (len 0 at end
// of file), or *err the read error. The bytes stay buffered until
// tr_bufread_consume; *data is valid until the next call on the reader.
// Cancelled while pending: nothing was read.
TR_API tr_poll tr_bufread_fill(tr_bufread *br, tr_cx *cx, const char **data, size_t *len,
                               tr_err *err);

// tr_bufread_consume marks the first n buffered bytes as handed out
// (n at most tr_bufread_buffered; more is a bug). Never blocks; from the
// task that uses br.
TR_API void tr_bufread_consume(tr_bufread *br, size_t n);

// tr_bufread_read reads up to len bytes: the buffered bytes first; with
// none buffered, a read of at least the buffer's size goes straight into
// buf. TR_READY with *err TR_OK and *n the count (0 at end of file), or
// *err the read error and *n 0. Cancelled while pending: nothing was read.
TR_API tr_poll tr_bufread_read(tr_bufread *br, tr_cx *cx, void *buf, size_t len, size_t *n,
                               tr_err *err);

// tr_bufread_read_exact reads exactly len bytes into buf, through the
// buffer: *err TR_OK, or TR_EEOF when the stream ended first, or the read
// error; *n (may be NULL) is the bytes read into buf (len on TR_OK). op is
// back to its zeroed state when tr_bufread_read_exact returns TR_READY.
// Cancelled while pending: tr_io_op_done(op) bytes are in buf, the rest is
// still to be read (from the reader's buffer or the descriptor).
TR_API tr_poll tr_bufread_read_exact(tr_bufread *br, tr_cx *cx, tr_io_op *op, void *buf, size_t len,
                                     size_t *n, tr_err *err);

// tr_bufread_read_until reads up to and including the byte delim: TR_READY
// with *err TR_OK and *data, *len the record (ending with delim, except for
// a last record at end of file, which is returned without it); TR_EEOF (len
// 0) at end of file with nothing buffered; TR_ETOOBIG (see max); or the read
// error, with the partial record still buffered. *data points into the
// buffer and is valid until the next call on the reader.
//
// max is the longest record accepted, in bytes, delim included; 0, or more
// than the buffer holds (cap - 1), means cap - 1. It bounds only what the
// call searches and returns, not memory (the buffer is fixed) nor reading:
// a read from the descriptor fills as much of the buffer as it can, so more
// than max bytes may be buffered. A record of at most max bytes is returned
// (*len <= max). Once max bytes are buffered with no delim among the first
// max, the call fails with TR_ETOOBIG at once, without reading more: *data
// NULL, *len 0, nothing consumed, so a call with the same max fails the
// same way again. To go on: close the stream, or call again with a larger
// max, or skip the over-long record. With max 0 the buffer is then full
// and holds no delim at all, so tr_bufread_consume(br,
// tr_bufread_buffered(br)) skips what has come of the record; with a
// smaller max its delim and the next records may already be buffered, so
// consume only through that delim (tr_bufread_fill shows the buffered
// bytes). Then read on: what the next calls return, up to the record's
// delim, is the rest of it (or TR_ETOOBIG again).
//
// Cancelled (or given up after a timeout) while pending: the partial
// record stays buffered and the next call returns it whole.
TR_API tr_poll tr_bufread_read_until(tr_bufread *br, tr_cx *cx, int delim, size_t max,
                                     const char **data, size_t *len, tr_err *err);

// tr_bufread_line reads one text line: as tr_bufread_read_until(br, cx,
// '\n', max, ...), with the ending "\n" or "\r\n" removed from *len and a
// NUL written after the line (so *line is also a C string, unless the line
// holds NUL bytes). max bounds the line with its ending ("\n" or "\r\n")
// as it bounds a record of tr_bufread_read_until: a longer line fails with
// TR_ETOOBIG and nothing consumed. A last line without a newline is
// returned at end of file; the call after it gives TR_EEOF. An empty line
// is TR_OK with *len 0. Cancellation as tr_bufread_read_until.
TR_API tr_poll tr_bufread_line(tr_bufread *br, tr_cx *cx, size_t max, const char **line,
                               size_t *len, tr_err *err);

// tr_bufread_copy writes everything br reads, buffered bytes first, to `to`
// until end of file: *err TR_OK at end of file, or the read or write error;
// *n (may be NULL) is the bytes written. op is back to its zeroed state
// when tr_bufread_copy returns TR_READY. Bytes not yet written stay in the
// reader, also when the task is cancelled while the copy is pending
// (tr_io_op_done(op) were written). It does not close or shut down `to`.
TR_API tr_poll tr_bufread_copy(tr_bufread *br, tr_cx *cx, tr_io_op *op, tr_io *to, size_t *n,
                               tr_err *err);

// ---------------------------------------------------------------------------
// Copy without a reader.

// tr_copy's buffer size.
#define TR_COPY_BUF ((size_t)8192)

// A copy in progress, with its buffer: embed it in the task state, zeroed.
// Back to its zeroed state when tr_copy returns TR_READY, so it may be
// reused at once for the next copy. A copy given up while pending keeps its
// count (tr_copy_op_done); tr_copy_op_abandon zeroes it for the next one.
typedef struct tr_copy_op {
    size_t cp_done;                    // private: bytes written to the destination so far
    uint32_t cp_start;                 // private: cp_buf[cp_start, cp_end) is read, not yet written
    uint32_t cp_end;                   // private
    unsigned char cp_buf[TR_COPY_BUF]; // private
} tr_copy_op;

_Static_assert(sizeof(tr_copy_op) == 2 * sizeof(void *) + TR_COPY_BUF,
               "tr_copy_op: two words and the buffer");

// tr_copy_op_done returns the bytes a pending copy has written so far.
static inline size_t
tr_copy_op_done(const tr_copy_op *op)
{
    return op->cp_done;
}

// tr_copy_op_abandon gives up a pending copy: op is ready for a new one
// (the bytes read but not yet written are dropped). A drop function need
// not call it.
static inline void
tr_copy_op_abandon(tr_copy_op *op)
{
    op->cp_done = 0;
    op->cp_start = 0;
    op->cp_end = 0;
}

// tr_copy reads from `from` and writes to `to` until from's end of file:
// TR_READY with *err TR_OK, or the read or write error (TR_EPIPE when to's
// reader went away); *n (may be NULL) is the bytes written to `to`. It
// does not close or shut down `to`. Every read and write charges the poll
// budget, so a long copy lets other tasks run. Works on any pair of
// descriptors the reactor watches (pipes, sockets, ttys); `from` and `to`
// may be the two halves of one tr_io_split (an echo). There is no single
// object here, so the op comes first. Cancelled while pending:
// tr_copy_op_done(op) bytes reached `to`; the bytes read but not yet
// written (at most TR_COPY_BUF) are lost with the op.
TR_API tr_poll tr_copy(tr_copy_op *op, tr_cx *cx, tr_io *from, tr_io *to, size_t *n, tr_err *err);

TR_END_DECLS

#endif
