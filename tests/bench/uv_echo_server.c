// uv_echo_server: a libuv TCP echo server, the baseline of issue #4's echo
// comparison (run_tcp_echo.sh runs it and troupe's echo server against the
// same load, bench_tcp_echo_load). Built only when pkg-config finds libuv.
//
// One loop, one thread, written the way a careful libuv user would: every
// connection reads into its own buffer, and what it read is echoed with
// uv_try_write; only the part the socket would not take at once is copied
// into a write request (uv_try_write refuses while writes are queued, so
// order is kept). TCP_NODELAY on every connection, as the load generator.
//
// usage: uv_echo_server --port P [--host 127.0.0.1] [--backlog 1024]
// Serves until SIGTERM or SIGINT, then closes every handle and exits 0 (1 if
// the loop could not be closed cleanly, 2 for bad arguments or a failed
// bind/listen).
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define READ_BUF 65536

// A connection. The handle comes first, so a handle pointer is a client
// pointer; handle.data is the client for connections and NULL for the
// listener and the signal handles.
typedef struct client {
    uv_tcp_t tcp;
    char buf[READ_BUF];
} client;

// A write of the bytes uv_try_write did not take; the bytes follow it.
typedef struct wreq {
    uv_write_t req;
    uv_buf_t buf;
} wreq;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static unsigned long long accepted, read_errors;

static void
on_client_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
client_close(uv_stream_t *s)
{
    if (!uv_is_closing((uv_handle_t *)s)) {
        uv_close((uv_handle_t *)s, on_client_closed);
    }
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    client *c = h->data;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static void
on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    uv_stream_t *s = req->handle;
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        client_close(s);
    }
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET) {
            read_errors++;
        }
        client_close(s);
        return;
    }
    if (nread == 0) {
        return; // EAGAIN
    }
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    int done = uv_try_write(s, &b, 1);
    if (done == nread) {
        return;
    }
    if (done < 0 && done != UV_EAGAIN) {
        client_close(s);
        return;
    }
    size_t off = done > 0 ? (size_t)done : 0;
    size_t rest = (size_t)nread - off;
    wreq *w = malloc(sizeof *w + rest);
    if (w == NULL) {
        client_close(s);
        return;
    }
    memcpy(w + 1, buf->base + off, rest);
    w->buf = uv_buf_init((char *)(w + 1), (unsigned)rest);
    if (uv_write(&w->req, s, &w->buf, 1, on_write) != 0) {
        free(w);
        client_close(s);
    }
}

static void
on_connection(uv_stream_t *srv, int status)
{
    if (status < 0) {
        fprintf(stderr, "uv_echo_server: accept: %s\n", uv_strerror(status));
        return;
    }
    client *c = malloc(sizeof *c);
    if (c == NULL) {
        return;
    }
    if (uv_tcp_init(loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        return;
    }
    accepted++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    }
}

static void
close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, h->data != NULL ? on_client_closed : NULL);
    }
}

static void
on_signal(uv_signal_t *sig, int signum)
{
    (void)sig;
    fprintf(stderr, "uv_echo_server: signal %d, closing\n", signum);
    // Closing every handle (listener, connections, both signal handles) lets
    // uv_run return once their close callbacks have run.
    uv_walk(loop, close_any, NULL);
}

static void
usage(void)
{
    fprintf(stderr, "usage: uv_echo_server --port P [--host 127.0.0.1] [--backlog 1024]\n"
                    "Echoes every byte back; SIGTERM or SIGINT ends it (exit 0).\n");
}

static long
parse_num(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "uv_echo_server: bad number: %s\n", s);
        usage();
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = -1, backlog = 1024;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--port") == 0) {
            port = parse_num(argv[++i], 1, 65535);
        } else if (i + 1 < argc && strcmp(argv[i], "--host") == 0) {
            host = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--backlog") == 0) {
            backlog = parse_num(argv[++i], 1, 65535);
        } else {
            usage();
            return 2;
        }
    }
    if (port < 0) {
        usage();
        return 2;
    }
    loop = uv_default_loop();
    struct sockaddr_storage addr;
    int rv = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr);
    if (rv != 0) {
        rv = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr);
    }
    if (rv != 0) {
        fprintf(stderr, "uv_echo_server: bad address %s\n", host);
        return 2;
    }
    uv_tcp_init(loop, &server);
    server.data = NULL;
    rv = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&server, (int)backlog, on_connection);
    }
    if (rv != 0) {
        fprintf(stderr, "uv_echo_server: listen on %s port %ld: %s\n", host, port, uv_strerror(rv));
        return 2;
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    sig_term.data = NULL;
    sig_int.data = NULL;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    fprintf(stderr, "uv_echo_server: libuv %s, listening on %s port %ld\n", uv_version_string(),
            host, port);

    uv_run(loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(loop);
    fprintf(stderr, "uv_echo_server: %llu connections served, %llu read errors\n", accepted,
            read_errors);
    if (rv != 0) {
        fprintf(stderr, "uv_echo_server: loop not closed cleanly: %s\n", uv_strerror(rv));
        return 1;
    }
    return 0;
}
