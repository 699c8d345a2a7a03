// test_bufread: troupe/bufread.h over pipes: read_exact at end of file
// (io.h's and the reader's), records by delimiter and text lines over input
// that a writer task sends in odd-sized chunks with yields between them,
// lines longer than the limit, a read_until abandoned by a timeout (its
// bytes stay in the reader), the small reads and fill/consume, and copies
// between pipes (tr_copy, tr_bufread_copy) on one and two workers.
//
// Each test runs a main task on a fresh runtime (tu_run_main) under a
// watchdog thread and checks afterwards that no task is left and no
// descriptor leaked. Nothing sleeps.
//
// End of file: test_net_eof_after_short_read guards io.c against losing
// the end of file after a short read; the tests here race the writer's
// close against the reader's last read on purpose.
#define _GNU_SOURCE
#include "../test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <troupe/bufread.h>
#include <troupe/io.h>
#include <troupe/net.h>
#include <troupe/time.h>

// write_now writes all of s to a fresh pipe's write end from inside a poll
// (it fits in the pipe) and closes that end: the reader then finds the
// data and the end of file without racing anyone.
static bool
write_now(tr_io *wr, const char *s, size_t n)
{
    bool ok = write(tr_io_fd(wr), s, n) == (ssize_t)n;
    tr_io_close(wr);
    return ok;
}

// ---------------------------------------------------------------------------
// A writer task: writes bytes [0, len) of a static text in odd-sized
// chunks (primes, cycling), yielding after each, then releases its
// reference to the write end (which closes the pipe unless the main task
// holds another reference).

static const size_t chunk_sizes[] = {1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 97};

typedef struct chunk_writer {
    int tr_pc;
    tr_io *wr; // owned reference
    const char *data;
    size_t len, off, n;
    unsigned k;
    tr_io_op op;
    tr_err err;
} chunk_writer;

static tr_poll
chunk_writer_poll(void *arg, tr_cx *cx)
{
    chunk_writer *st = arg;
    TR_BEGIN(st);
    while (st->off < st->len) {
        st->n = chunk_sizes[st->k++ % (sizeof chunk_sizes / sizeof chunk_sizes[0])];
        if (st->n > st->len - st->off) {
            st->n = st->len - st->off;
        }
        TR_AWAIT(st, tr_write_all(st->wr, cx, &st->op, st->data + st->off, st->n, NULL, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        st->off += st->n;
        TR_YIELD(st, cx);
    }
    TR_END(st);
}

static void
chunk_writer_drop(void *arg)
{
    chunk_writer *st = arg;
    tr_io_release(st->wr);
}

static const tr_task_spec chunk_writer_spec = {.name = "chunk-writer",
                                               .poll = chunk_writer_poll,
                                               .drop = chunk_writer_drop,
                                               .size = sizeof(chunk_writer)};

// ---------------------------------------------------------------------------
// Setup errors and ownership of the buffer.

static void
test_bufread_init_fini(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    int fds = tu_count_fds();
    tr_io *rd, *wr;
    assert_int_equal(tr_pipe(rt, &rd, &wr), TR_OK);
    tr_bufread br;
    char mine[64];
    assert_int_equal(tr_bufread_init(NULL, rd, NULL, 0), TR_EINVAL);
    assert_int_equal(tr_bufread_init(&br, NULL, NULL, 0), TR_EINVAL);
    assert_int_equal(tr_bufread_init(&br, rd, mine, TR_BUFREAD_MIN_CAP - 1), TR_EINVAL);
    assert_int_equal(tr_bufread_init(&br, rd, NULL, TR_BUFREAD_MIN_CAP - 1), TR_EINVAL);

    // Heap buffer of the default size, freed by fini (ASan checks).
    assert_int_equal(tr_bufread_init(&br, rd, NULL, 0), TR_OK);
    assert_ptr_equal(tr_bufread_io(&br), rd);
    assert_int_equal(tr_bufread_buffered(&br), 0);
    tr_bufread_fini(&br);
    tr_bufread_fini(&br); // idempotent
    // The caller's buffer: fini leaves it alone.
    assert_int_equal(tr_bufread_init(&br, rd, mine, sizeof mine), TR_OK);
    tr_bufread_fini(&br);
    memset(&br, 0, sizeof br);
    tr_bufread_fini(&br); // a zeroed reader too

    tr_io_close(rd);
    tr_io_close(wr);
    assert_int_equal(tu_count_fds(), fds);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// read_exact at end of file reports a short read: io.h's tr_read_exact and
// the reader's, which also crosses its buffer (and bypasses it for a large
// read).

typedef struct exact_main {
    int tr_pc;
    size_t done; // what the last read_exact or copy moved
    tr_io *rd, *wr;
    tr_io_op op;
    tr_err err;
    tr_bufread br;
    char mem[16];
    char buf[128];
    char want[128];
} exact_main;

static tr_poll
exact_main_poll(void *arg, tr_cx *cx)
{
    exact_main *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr), TR_OK);
    CHECK(st, write_now(st->wr, "hello", 5));
    st->wr = NULL;
    TR_AWAIT(st, tr_read_exact(st->rd, cx, &st->op, st->buf, 10, &st->done, &st->err));
    CHECK_ERR(st, st->err, TR_EEOF);
    CHECK(st, st->done == 5 && memcmp(st->buf, "hello", 5) == 0);
    tr_io_release(st->rd);
    st->rd = NULL;

    // Through a 16-byte reader: 3 bytes (a buffer fill of 15), then 90
    // (12 buffered, then 78 straight into buf), then 10 of the 7 left.
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr), TR_OK);
    for (size_t i = 0; i < 100; i++) {
        st->want[i] = (char)('A' + i % 50);
    }
    CHECK(st, write_now(st->wr, st->want, 100));
    st->wr = NULL;
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);
    TR_AWAIT(st, tr_bufread_read_exact(&st->br, cx, &st->op, st->buf, 3, &st->done, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK(st, st->done == 3 && memcmp(st->buf, st->want, 3) == 0);
    CHECK(st, tr_bufread_buffered(&st->br) == 12);
    TR_AWAIT(st, tr_bufread_read_exact(&st->br, cx, &st->op, st->buf, 90, &st->done, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK(st, st->done == 90 && memcmp(st->buf, st->want + 3, 90) == 0);
    CHECK(st, tr_bufread_buffered(&st->br) == 0);
    TR_AWAIT(st, tr_bufread_read_exact(&st->br, cx, &st->op, st->buf, 10, &st->done, &st->err));
    CHECK_ERR(st, st->err, TR_EEOF);
    CHECK(st, st->done == 7 && memcmp(st->buf, st->want + 93, 7) == 0);
    // And again at end of file: nothing at all.
    TR_AWAIT(st, tr_bufread_read_exact(&st->br, cx, &st->op, st->buf, 1, &st->done, &st->err));
    CHECK_ERR(st, st->err, TR_EEOF);
    CHECK(st, st->done == 0);
    TR_END(st);
}

static void
exact_main_drop(void *arg)
{
    exact_main *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    tr_io_release(st->wr);
}

static const tr_task_spec exact_main_spec = {.name = "exact-main",
                                             .poll = exact_main_poll,
                                             .drop = exact_main_drop,
                                             .size = sizeof(exact_main)};

static void
test_bufread_read_exact_eof(void **state)
{
    (void)state;
    exact_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &exact_main_spec, &m);
}

// ---------------------------------------------------------------------------
// Lines: "\n" and "\r\n" stripped, empty lines kept, a lone "\r" kept, a
// last line without a newline returned at end of file, then TR_EEOF. A
// 16-byte buffer, so lines straddle fills and the buffer is compacted.

typedef struct lines_main {
    int tr_pc;
    tr_io *rd, *wr;
    tr_bufread br;
    const char *line;
    size_t len;
    unsigned i;
    tr_err err;
    char mem[16];
} lines_main;

static const char *const lines_text = "alpha\nbeta\r\n\r\n\nx\ry\nfifteen-chars!\ngamma\r\nlast";
static const char *const lines_want[] = {"alpha", "beta",           "",      "",
                                         "x\ry",  "fifteen-chars!", "gamma", "last"};

static tr_poll
lines_main_poll(void *arg, tr_cx *cx)
{
    lines_main *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr), TR_OK);
    CHECK(st, write_now(st->wr, lines_text, strlen(lines_text)));
    st->wr = NULL;
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);
    for (st->i = 0; st->i < sizeof lines_want / sizeof lines_want[0]; st->i++) {
        TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        CHECK_MEM(st, st->line, st->len, lines_want[st->i]);
        CHECK(st, strcmp(st->line, lines_want[st->i]) == 0); // NUL-terminated
    }
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_EEOF);
    CHECK(st, st->len == 0);
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_EEOF);
    TR_END(st);
}

static void
lines_main_drop(void *arg)
{
    lines_main *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    tr_io_release(st->wr);
}

static const tr_task_spec lines_main_spec = {.name = "lines-main",
                                             .poll = lines_main_poll,
                                             .drop = lines_main_drop,
                                             .size = sizeof(lines_main)};

static void
test_bufread_lines_eof(void **state)
{
    (void)state;
    lines_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &lines_main_spec, &m);
}

// ---------------------------------------------------------------------------
// Limits: a line longer than the buffer (or than max) is TR_ETOOBIG with
// nothing consumed; the caller can drop it and go on. The delimiter a
// read_until searched for is not mixed up with the next call's.

typedef struct limit_main {
    int tr_pc;
    tr_io *rd, *wr;
    tr_bufread br;
    const char *line;
    size_t len, skipped;
    tr_err err;
    bool found;
    char mem[32];
    char text[256];
} limit_main;

static tr_poll
limit_main_poll(void *arg, tr_cx *cx)
{
    limit_main *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr), TR_OK);
    // "short\n", 40 x's and "\n", "after\n", "aa,bbbbbb;", "abcdef;".
    snprintf(st->text, sizeof st->text, "short\n%.40s\nafter\naa,bbbbbb;abcdef;",
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    CHECK(st, write_now(st->wr, st->text, strlen(st->text)));
    st->wr = NULL;
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);

    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "short");
    // 41 bytes with the newline, 31 fit: too big, nothing consumed.
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_ETOOBIG);
    CHECK(st, tr_bufread_buffered(&st->br) == 31);
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_ETOOBIG); // still there
    // Drop the rest of the line with fill/consume.
    for (st->found = false; !st->found;) {
        TR_AWAIT(st, tr_bufread_fill(&st->br, cx, &st->line, &st->len, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        CHECK(st, st->len > 0);
        {
            const char *nl = memchr(st->line, '\n', st->len);
            size_t k = nl != NULL ? (size_t)(nl - st->line) + 1 : st->len;
            st->found = nl != NULL;
            st->skipped += k;
            tr_bufread_consume(&st->br, k);
        }
    }
    CHECK(st, st->skipped == 41);
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "after");

    // ';' searched over 5 bytes (past the ','), then ',' from the start.
    TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 5, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_ETOOBIG);
    TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ',', 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "aa,");
    TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "bbbbbb;");
    // max counts the delimiter: 7 bytes do not fit in 6.
    TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 6, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_ETOOBIG);
    TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 7, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "abcdef;");
    TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_EEOF);
    TR_END(st);
}

static void
limit_main_drop(void *arg)
{
    limit_main *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    tr_io_release(st->wr);
}

static const tr_task_spec limit_main_spec = {.name = "limit-main",
                                             .poll = limit_main_poll,
                                             .drop = limit_main_drop,
                                             .size = sizeof(limit_main)};

static void
test_bufread_line_too_long(void **state)
{
    (void)state;
    limit_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &limit_main_spec, &m);
}

// ---------------------------------------------------------------------------
// Small reads and fill/consume on a heap reader.

typedef struct small_main {
    int tr_pc;
    tr_io *rd, *wr;
    tr_bufread br;
    const char *data;
    size_t len;
    size_t n;
    tr_err ioerr;
    tr_err err;
    char buf[64];
} small_main;

static tr_poll
small_main_poll(void *arg, tr_cx *cx)
{
    small_main *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr), TR_OK);
    CHECK(st, write_now(st->wr, "0123456789abcdefghij", 20));
    st->wr = NULL;
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, NULL, 32), TR_OK);
    TR_AWAIT(st, tr_bufread_read(&st->br, cx, st->buf, 0, &st->n, &st->ioerr));
    CHECK(st, st->ioerr == TR_OK && st->n == 0); // a zero-length read reads nothing
    TR_AWAIT(st, tr_bufread_read(&st->br, cx, st->buf, 4, &st->n, &st->ioerr));
    CHECK(st, st->n == 4 && memcmp(st->buf, "0123", 4) == 0);
    CHECK(st, tr_bufread_buffered(&st->br) == 16);
    TR_AWAIT(st, tr_bufread_fill(&st->br, cx, &st->data, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->data, st->len, "456789abcdefghij");
    tr_bufread_consume(&st->br, 6);
    // Asks for more than is buffered: gets what is buffered, no read.
    TR_AWAIT(st, tr_bufread_read(&st->br, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
    CHECK(st, st->n == 10 && memcmp(st->buf, "abcdefghij", 10) == 0);
    TR_AWAIT(st, tr_bufread_read(&st->br, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
    CHECK(st, st->ioerr == TR_OK && st->n == 0);
    TR_AWAIT(st, tr_bufread_fill(&st->br, cx, &st->data, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK(st, st->len == 0); // end of file
    TR_END(st);
}

static void
small_main_drop(void *arg)
{
    small_main *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    tr_io_release(st->wr);
}

static const tr_task_spec small_main_spec = {.name = "small-main",
                                             .poll = small_main_poll,
                                             .drop = small_main_drop,
                                             .size = sizeof(small_main)};

static void
test_bufread_small_reads(void **state)
{
    (void)state;
    small_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &small_main_spec, &m);
}

// ---------------------------------------------------------------------------
// A read_until given up by a timeout (as a cancel at that await would):
// the partial record stays in the reader and the next call completes it.

typedef struct abandon_main {
    int tr_pc;
    tr_io *rd, *wr;
    tr_bufread br;
    tr_timeout to;
    bool expired;
    const char *line;
    size_t len;
    size_t n;
    tr_err ioerr;
    tr_err err;
    char mem[64];
} abandon_main;

static tr_poll
abandon_main_poll(void *arg, tr_cx *cx)
{
    abandon_main *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr), TR_OK);
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);
    TR_AWAIT(st, tr_write(st->wr, cx, "first\npar", 9, &st->n, &st->ioerr));
    CHECK(st, st->n == 9);
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "first");
    TR_AWAIT(st, tr_timeout_poll(&st->to, cx, 2 * TR_NS_PER_MS,
                                 tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err),
                                 &st->expired));
    CHECK(st, st->expired);
    CHECK(st, tr_bufread_buffered(&st->br) == 3); // "par" is kept
    TR_AWAIT(st, tr_write(st->wr, cx, "tial\n", 5, &st->n, &st->ioerr));
    CHECK(st, st->n == 5);
    TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_MEM(st, st->line, st->len, "partial");
    TR_END(st);
}

static void
abandon_main_drop(void *arg)
{
    abandon_main *st = arg;
    tr_timeout_abandon(&st->to);
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    tr_io_release(st->wr);
}

static const tr_task_spec abandon_main_spec = {.name = "abandon-main",
                                               .poll = abandon_main_poll,
                                               .drop = abandon_main_drop,
                                               .size = sizeof(abandon_main)};

static void
test_bufread_abandoned_keeps_bytes(void **state)
{
    (void)state;
    abandon_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &abandon_main_spec, &m);
}

// ---------------------------------------------------------------------------
// Records and lines over chunked input: a writer task sends the text in
// odd-sized chunks with yields; the reader takes RECORDS records (or lines)
// and checks each. With `eof` (only when io.c keeps the end of file), the
// writer's close ends the stream and the reader sees the last line without
// its newline and then TR_EEOF; without it, the main task holds the write
// end open until the reader is done.

#define RECORDS 300

static char records_text[RECORDS * 220];
static size_t records_len;
static char lines_text2[RECORDS * 220];
static size_t lines_len;

// record i: "r<i>:" then (i * 37) % 200 letters, then ';'.
static size_t
record_make(unsigned i, char *out)
{
    size_t n = (size_t)sprintf(out, "r%u:", i);
    size_t pay = (i * 37u) % 200u;
    for (size_t k = 0; k < pay; k++) {
        out[n++] = (char)('a' + (i + k) % 26);
    }
    out[n++] = ';';
    return n;
}

// line i: (i * 53) % 150 characters (none for some), then "\n" or "\r\n";
// the last line has no newline at all.
static size_t
line_make(unsigned i, char *out, bool ending)
{
    size_t n = (i * 53u) % 150u;
    for (size_t k = 0; k < n; k++) {
        out[k] = (char)('A' + (i * 3 + k) % 26);
    }
    if (ending) {
        if (i % 3 == 0) {
            out[n++] = '\r';
        }
        out[n++] = '\n';
    }
    return n;
}

static void
texts_make(void)
{
    records_len = 0;
    for (unsigned i = 0; i < RECORDS; i++) {
        records_len += record_make(i, records_text + records_len);
    }
    lines_len = 0;
    for (unsigned i = 0; i < RECORDS; i++) {
        lines_len += line_make(i, lines_text2 + lines_len, i + 1 < RECORDS);
    }
}

typedef struct chunk_reader {
    int tr_pc;
    tr_io *rd; // owned
    bool lines, eof;
    unsigned i;
    tr_bufread br;
    const char *data;
    size_t len, wlen;
    tr_err err;
    char mem[256];
    char want[256];
} chunk_reader;

static tr_poll
chunk_reader_poll(void *arg, tr_cx *cx)
{
    chunk_reader *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);
    // Without eof, the last line (it has no newline) cannot end.
    for (st->i = 0; st->i < RECORDS - (unsigned)(st->lines && !st->eof); st->i++) {
        if (st->lines) {
            TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->data, &st->len, &st->err));
            st->wlen = line_make(st->i, st->want, false);
        } else {
            TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 0, &st->data, &st->len, &st->err));
            st->wlen = record_make(st->i, st->want);
        }
        CHECK_ERR(st, st->err, TR_OK);
        CHECK(st, st->len == st->wlen && memcmp(st->data, st->want, st->len) == 0);
    }
    if (st->eof) {
        TR_AWAIT(st, tr_bufread_read_until(&st->br, cx, ';', 0, &st->data, &st->len, &st->err));
        CHECK_ERR(st, st->err, TR_EEOF);
    }
    tr_cx_set_result_u64(cx, st->i);
    TR_END(st);
}

static void
chunk_reader_drop(void *arg)
{
    chunk_reader *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
}

static const tr_task_spec chunk_reader_spec = {.name = "chunk-reader",
                                               .poll = chunk_reader_poll,
                                               .drop = chunk_reader_drop,
                                               .size = sizeof(chunk_reader)};

typedef struct chunk_main {
    int tr_pc;
    bool lines, eof;
    tr_io *wr; // held open until the reader is done (without eof)
    tr_io *rd; // held open until the writer is done (it may write after
               // the reader stopped: a write to a pipe nobody reads is
               // SIGPIPE)
    tr_join jw, jr;
    tr_outcome out;
} chunk_main;

static tr_poll
chunk_main_poll(void *arg, tr_cx *cx)
{
    chunk_main *st = arg;
    TR_BEGIN(st);
    {
        chunk_reader r;
        memset(&r, 0, sizeof r);
        r.lines = st->lines;
        r.eof = st->eof;
        chunk_writer w;
        memset(&w, 0, sizeof w);
        w.data = st->lines ? lines_text2 : records_text;
        w.len = st->lines ? lines_len : records_len;
        CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &r.rd, &w.wr), TR_OK);
        if (!st->eof) {
            st->wr = tr_io_ref(w.wr);
        }
        st->rd = tr_io_ref(r.rd);
        st->jr = tu_spawn(cx, &chunk_reader_spec, &r);
        st->jw = tu_spawn(cx, &chunk_writer_spec, &w);
    }
    TR_AWAIT(st, tr_join_poll(&st->jr, cx, &st->out));
    CHECK_ERR(st, st->out.err, TR_OK);
    CHECK(st, st->out.value.u64 == RECORDS - (unsigned)(st->lines && !st->eof));
    TR_AWAIT(st, tr_join_poll(&st->jw, cx, &st->out));
    CHECK_ERR(st, st->out.err, TR_OK);
    TR_END(st);
}

static void
chunk_main_drop(void *arg)
{
    chunk_main *st = arg;
    tr_io_release(st->wr);
    tr_io_release(st->rd);
    tr_join_release(&st->jr);
    tr_join_release(&st->jw);
}

static const tr_task_spec chunk_main_spec = {.name = "chunk-main",
                                             .poll = chunk_main_poll,
                                             .drop = chunk_main_drop,
                                             .size = sizeof(chunk_main)};

static void
run_chunked(bool lines)
{
    texts_make();
    for (unsigned workers = 1; workers <= 2; workers++) {
        chunk_main m = {.lines = lines, .eof = true};
        tu_run_main(workers, &chunk_main_spec, &m);
    }
}

static void
test_bufread_read_until_chunked(void **state)
{
    (void)state;
    run_chunked(false);
}

static void
test_bufread_lines_chunked(void **state)
{
    (void)state;
    run_chunked(true);
}

// ---------------------------------------------------------------------------
// Copies between pipes: writer -> pipe A -> copy task -> pipe B -> reader.
// tr_copy, and tr_bufread_copy after two header lines read through the
// same reader. The reader takes exactly COPY_BYTES; then the main task
// closes A's write end (it held the last reference): the copy, which has
// drained A by then, sees the end of file, reports COPY_BYTES and closes
// B, and the main task sees B's end of file. With eof (io.c fixed) the
// writer closes A itself at once, racing the copy's reads.

#define COPY_BYTES ((size_t)300000) // several pipe buffers

static void
copy_pattern(char *buf, size_t len, size_t off)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (char)(((off + i) * 7 + ((off + i) >> 9)) & 0xff);
    }
}

typedef struct big_writer {
    int tr_pc;
    tr_io *wr; // owned
    bool header;
    size_t off, n;
    unsigned k;
    tr_io_op op;
    tr_err err;
    char buf[5000];
} big_writer;

static tr_poll
big_writer_poll(void *arg, tr_cx *cx)
{
    big_writer *st = arg;
    TR_BEGIN(st);
    if (st->header) {
        TR_AWAIT(st, tr_write_all(st->wr, cx, &st->op, "h1: a\r\nh2: b\n", 13, NULL, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
    }
    for (st->off = 0; st->off < COPY_BYTES; st->off += st->n) {
        st->n = 1 + (st->k++ * 2741u) % sizeof st->buf;
        if (st->n > COPY_BYTES - st->off) {
            st->n = COPY_BYTES - st->off;
        }
        copy_pattern(st->buf, st->n, st->off);
        TR_AWAIT(st, tr_write_all(st->wr, cx, &st->op, st->buf, st->n, NULL, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        if (st->k % 5 == 0) {
            TR_YIELD(st, cx);
        }
    }
    TR_END(st);
}

static void
big_writer_drop(void *arg)
{
    big_writer *st = arg;
    tr_io_release(st->wr);
}

static const tr_task_spec big_writer_spec = {.name = "big-writer",
                                             .poll = big_writer_poll,
                                             .drop = big_writer_drop,
                                             .size = sizeof(big_writer)};

typedef struct copier {
    int tr_pc;
    size_t done;      // what the last read_exact or copy moved
    tr_io *from, *to; // owned
    bool buffered;
    tr_copy_op cp;
    tr_bufread br;
    tr_io_op op;
    const char *line;
    size_t len;
    tr_err err;
} copier;

static tr_poll
copier_poll(void *arg, tr_cx *cx)
{
    copier *st = arg;
    TR_BEGIN(st);
    if (!st->buffered) {
        TR_AWAIT(st, tr_copy(&st->cp, cx, st->from, st->to, &st->done, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        tr_cx_set_result_u64(cx, st->done);
    } else {
        CHECK_ERR(st, tr_bufread_init(&st->br, st->from, NULL, 0), TR_OK);
        TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        CHECK_MEM(st, st->line, st->len, "h1: a");
        TR_AWAIT(st, tr_bufread_line(&st->br, cx, 0, &st->line, &st->len, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        CHECK_MEM(st, st->line, st->len, "h2: b");
        TR_AWAIT(st, tr_bufread_copy(&st->br, cx, &st->op, st->to, &st->done, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        tr_cx_set_result_u64(cx, st->done);
    }
    tr_io_close(st->to); // the reader's end of file
    st->to = NULL;
    TR_END(st);
}

static void
copier_drop(void *arg)
{
    copier *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->from);
    tr_io_release(st->to);
}

static const tr_task_spec copier_spec = {
    .name = "copier", .poll = copier_poll, .drop = copier_drop, .size = sizeof(copier)};

typedef struct big_reader {
    int tr_pc;
    tr_io *rd; // owned
    size_t off;
    size_t n;
    tr_err ioerr;
    char buf[4096];
    char want[4096];
} big_reader;

static tr_poll
big_reader_poll(void *arg, tr_cx *cx)
{
    big_reader *st = arg;
    TR_BEGIN(st);
    while (st->off < COPY_BYTES) {
        TR_AWAIT(st, tr_read(st->rd, cx, st->buf,
                             COPY_BYTES - st->off < sizeof st->buf ? COPY_BYTES - st->off
                                                                   : sizeof st->buf,
                             &st->n, &st->ioerr));
        CHECK(st, st->n > 0);
        copy_pattern(st->want, st->n, st->off);
        CHECK(st, memcmp(st->buf, st->want, st->n) == 0);
        st->off += st->n;
    }
    tr_cx_set_result_u64(cx, st->off);
    TR_END(st);
}

static void
big_reader_drop(void *arg)
{
    big_reader *st = arg;
    tr_io_release(st->rd);
}

static const tr_task_spec big_reader_spec = {.name = "big-reader",
                                             .poll = big_reader_poll,
                                             .drop = big_reader_drop,
                                             .size = sizeof(big_reader)};

typedef struct copy_main {
    int tr_pc;
    bool buffered, eof;
    tr_io *a_wr; // the main task's reference to A's write end
    tr_io *b_rd; // a reference to B's read end, for the end of file
    tr_join jw, jc, jr;
    tr_outcome out;
    size_t n;
    tr_err ioerr;
    char buf[16];
} copy_main;

static tr_poll
copy_main_poll(void *arg, tr_cx *cx)
{
    copy_main *st = arg;
    TR_BEGIN(st);
    {
        big_writer w;
        memset(&w, 0, sizeof w);
        copier c;
        memset(&c, 0, sizeof c);
        big_reader r;
        memset(&r, 0, sizeof r);
        w.header = c.buffered = st->buffered;
        CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &c.from, &w.wr), TR_OK);
        CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &r.rd, &c.to), TR_OK);
        if (!st->eof) {
            st->a_wr = tr_io_ref(w.wr);
        }
        st->b_rd = tr_io_ref(r.rd);
        st->jw = tu_spawn(cx, &big_writer_spec, &w);
        st->jc = tu_spawn(cx, &copier_spec, &c);
        st->jr = tu_spawn(cx, &big_reader_spec, &r);
    }
    TR_AWAIT(st, tr_join_poll(&st->jr, cx, &st->out));
    CHECK_ERR(st, st->out.err, TR_OK);
    CHECK(st, st->out.value.u64 == COPY_BYTES);
    TR_AWAIT(st, tr_join_poll(&st->jw, cx, &st->out));
    CHECK_ERR(st, st->out.err, TR_OK);
    tr_io_release(st->a_wr); // the last reference: A's end of file
    st->a_wr = NULL;
    TR_AWAIT(st, tr_join_poll(&st->jc, cx, &st->out));
    CHECK_ERR(st, st->out.err, TR_OK);
    CHECK(st, st->out.value.u64 == COPY_BYTES);
    TR_AWAIT(st, tr_read(st->b_rd, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
    CHECK(st, st->ioerr == TR_OK && st->n == 0);
    TR_END(st);
}

static void
copy_main_drop(void *arg)
{
    copy_main *st = arg;
    tr_io_release(st->a_wr);
    tr_io_release(st->b_rd);
    tr_join_release(&st->jw);
    tr_join_release(&st->jc);
    tr_join_release(&st->jr);
}

static const tr_task_spec copy_main_spec = {
    .name = "copy-main", .poll = copy_main_poll, .drop = copy_main_drop, .size = sizeof(copy_main)};

static void
run_copy(bool buffered)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        copy_main m = {.buffered = buffered};
        tu_run_main(workers, &copy_main_spec, &m);
        copy_main e = {.buffered = buffered, .eof = true};
        tu_run_main(workers, &copy_main_spec, &e);
    }
}

static void
test_bufread_copy_pipes(void **state)
{
    (void)state;
    run_copy(false);
}

static void
test_bufread_copy_after_lines(void **state)
{
    (void)state;
    run_copy(true);
}

// A write error stops the copy and is reported, with what was written.
typedef struct copyerr_main {
    int tr_pc;
    size_t done; // what the last read_exact or copy moved
    tr_io *a_rd, *a_wr, *b_rd, *b_wr;
    tr_copy_op cp;
    tr_err err;
    size_t n;
    tr_err ioerr;
} copyerr_main;

static tr_poll
copyerr_main_poll(void *arg, tr_cx *cx)
{
    copyerr_main *st = arg;
    TR_BEGIN(st);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->a_rd, &st->a_wr), TR_OK);
    CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->b_rd, &st->b_wr), TR_OK);
    tr_io_close(st->b_rd); // nobody reads B
    st->b_rd = NULL;
    TR_AWAIT(st, tr_write(st->a_wr, cx, "data", 4, &st->n, &st->ioerr));
    CHECK(st, st->n == 4);
    TR_AWAIT(st, tr_copy(&st->cp, cx, st->a_rd, st->b_wr, &st->done, &st->err));
    CHECK_ERR(st, st->err, TR_EPIPE);
    CHECK(st, st->done == 0);
    TR_END(st);
}

static void
copyerr_main_drop(void *arg)
{
    copyerr_main *st = arg;
    tr_io_release(st->a_rd);
    tr_io_release(st->a_wr);
    tr_io_release(st->b_rd);
    tr_io_release(st->b_wr);
}

static const tr_task_spec copyerr_main_spec = {.name = "copyerr-main",
                                               .poll = copyerr_main_poll,
                                               .drop = copyerr_main_drop,
                                               .size = sizeof(copyerr_main)};

static void
test_bufread_copy_write_error(void **state)
{
    (void)state;
    // write(2) to a pipe without a reader raises SIGPIPE before EPIPE.
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &ign, &old), 0);
    copyerr_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &copyerr_main_spec, &m);
    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

// ---------------------------------------------------------------------------
// Op reuse: each op is back to its zeroed state when its awaitable returns
// TR_READY, so a second call on the same op does its whole work: two
// read_exacts through the reader (the second as long as the first, which a
// count left over would end at once), then two tr_copy and two
// tr_bufread_copy from two sources into one pipe, each reporting its own
// count.

#define REUSE_A 5000
#define REUSE_B 3000

typedef struct reuse_main {
    int tr_pc;
    tr_io *rd, *wr;   // a source
    tr_io *ord, *owr; // where the copies go
    tr_bufread br;
    tr_io_op op;
    tr_copy_op cp;
    size_t n;
    tr_err err;
    int round; // 0: tr_copy, 1: tr_bufread_copy
    int src;   // 0: a, 1: b
    char mem[16];
    char a[REUSE_A], b[REUSE_B];
    char got[REUSE_A + REUSE_B];
} reuse_main;

static bool
reuse_source(tr_cx *cx, reuse_main *st, const char *data, size_t len)
{
    return tr_pipe(tr_cx_rt(cx), &st->rd, &st->wr) == TR_OK && write_now(st->wr, data, len);
}

// reuse_drain reads what the copies put into the output pipe (it is all
// there already: a pipe holds 64 KiB) and checks it is a then b.
static bool
reuse_drain(reuse_main *st)
{
    size_t want = REUSE_A + REUSE_B;
    ssize_t k = read(tr_io_fd(st->ord), st->got, sizeof st->got);
    return k == (ssize_t)want && memcmp(st->got, st->a, REUSE_A) == 0 &&
           memcmp(st->got + REUSE_A, st->b, REUSE_B) == 0;
}

static tr_poll
reuse_main_poll(void *arg, tr_cx *cx)
{
    reuse_main *st = arg;
    TR_BEGIN(st);
    for (size_t i = 0; i < REUSE_A; i++) {
        st->a[i] = (char)('a' + i % 26);
    }
    for (size_t i = 0; i < REUSE_B; i++) {
        st->b[i] = (char)('A' + i % 23);
    }

    // tr_bufread_read_exact twice on one op, 20 bytes each, through a
    // 16-byte reader.
    CHECK(st, reuse_source(cx, st, st->a, 40));
    CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);
    TR_AWAIT(st, tr_bufread_read_exact(&st->br, cx, &st->op, st->got, 20, &st->n, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_EQ(st, st->n, 20);
    TR_AWAIT(st, tr_bufread_read_exact(&st->br, cx, &st->op, st->got + 20, 20, &st->n, &st->err));
    CHECK_ERR(st, st->err, TR_OK);
    CHECK_EQ(st, st->n, 20);
    CHECK(st, memcmp(st->got, st->a, 40) == 0);
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    st->rd = NULL;

    // The copies, twice each on one op.
    for (st->round = 0; st->round < 2; st->round++) {
        CHECK_ERR(st, tr_pipe(tr_cx_rt(cx), &st->ord, &st->owr), TR_OK);
        for (st->src = 0; st->src < 2; st->src++) {
            CHECK(st, reuse_source(cx, st, st->src == 0 ? st->a : st->b,
                                   st->src == 0 ? REUSE_A : REUSE_B));
            if (st->round == 0) {
                TR_AWAIT(st, tr_copy(&st->cp, cx, st->rd, st->owr, &st->n, &st->err));
            } else {
                CHECK_ERR(st, tr_bufread_init(&st->br, st->rd, st->mem, sizeof st->mem), TR_OK);
                TR_AWAIT(st, tr_bufread_copy(&st->br, cx, &st->op, st->owr, &st->n, &st->err));
                tr_bufread_fini(&st->br);
            }
            CHECK_ERR(st, st->err, TR_OK);
            CHECK_EQ(st, st->n, st->src == 0 ? REUSE_A : REUSE_B);
            tr_io_release(st->rd);
            st->rd = NULL;
        }
        CHECK(st, reuse_drain(st));
        tr_io_close(st->ord);
        tr_io_close(st->owr);
        st->ord = st->owr = NULL;
    }
    TR_END(st);
}

static void
reuse_main_drop(void *arg)
{
    reuse_main *st = arg;
    tr_bufread_fini(&st->br);
    tr_io_release(st->rd);
    tr_io_release(st->ord);
    tr_io_release(st->owr);
}

static const tr_task_spec reuse_main_spec = {.name = "reuse-main",
                                             .poll = reuse_main_poll,
                                             .drop = reuse_main_drop,
                                             .size = sizeof(reuse_main)};

static void
test_bufread_op_reuse(void **state)
{
    (void)state;
    reuse_main m;
    memset(&m, 0, sizeof m);
    tu_run_main(1, &reuse_main_spec, &m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bufread_init_fini),
        cmocka_unit_test(test_bufread_read_exact_eof),
        cmocka_unit_test(test_bufread_lines_eof),
        cmocka_unit_test(test_bufread_line_too_long),
        cmocka_unit_test(test_bufread_small_reads),
        cmocka_unit_test(test_bufread_abandoned_keeps_bytes),
        cmocka_unit_test(test_bufread_read_until_chunked),
        cmocka_unit_test(test_bufread_lines_chunked),
        cmocka_unit_test(test_bufread_copy_pipes),
        cmocka_unit_test(test_bufread_copy_after_lines),
        cmocka_unit_test(test_bufread_copy_write_error),
        cmocka_unit_test(test_bufread_op_reuse),
    };
    return tu_run(tests);
}
