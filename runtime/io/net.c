// Design notes.
//
// Every descriptor is created non-blocking and close-on-exec by the call
// that makes it (SOCK_NONBLOCK | SOCK_CLOEXEC, pipe2, accept4 in io.c):
// setting the flags afterwards would race a fork+exec on another thread.
// A new descriptor numbered 0, 1 or 2 (the program closed its standard
// streams) is moved above 2 first, because tr_io_open treats those numbers
// as inherited standard streams that it must borrow, never own.
//
// Connect. A TCP connect is io.c's tr_connect on a socket the op owns until
// the connect completes, so that a cancelled task's drop can close it
// (tr_net_connect_abandon). A Unix connect never goes through tr_connect:
// it completes or fails inside connect(2) (EAGAIN means the listener's
// backlog is full, and no event would tell when to retry), so it is done
// in one poll and the op never holds anything.
//
// Address text is numeric only: parsing never blocks and never reads
// /etc/hosts; names go through tr_resolve on the blocking pool.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <troupe/net.h>

#include "base/base.h"
#include "io/io.h"

// ---------------------------------------------------------------------------
// Descriptors.

// fd_high moves a descriptor numbered 0..2 above 2 (see the notes).
static tr_err
fd_high(int *fd)
{
    if (*fd > 2) {
        return TR_OK;
    }
    int n = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(*fd);
    if (n < 0) {
        *fd = -1;
        return tr__errno(e);
    }
    *fd = n; // O_NONBLOCK belongs to the open file: the duplicate has it
    return TR_OK;
}

static tr_err
sock_new(int family, int type, int *fd)
{
    *fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*fd < 0) {
        return tr__errno(errno);
    }
    return fd_high(fd);
}

// io_take registers fd with rt, or closes it on failure.
static tr_err
io_take(tr_rt *rt, int fd, tr_io **out)
{
    tr_err rv = tr_io_open(rt, fd, 0, out);
    if (rv != TR_OK) {
        close(fd);
        *out = NULL;
    }
    return rv;
}

static int
io_fd(const tr_io *io)
{
    return io == NULL ? -1 : tr_io_fd(io);
}

// ---------------------------------------------------------------------------
// Addresses.

static bool
addr_ok(const tr_addr *a)
{
    return a != NULL && a->len >= sizeof(sa_family_t) && a->len <= sizeof(a->ss);
}

static bool
is_inet(int family)
{
    return family == AF_INET || family == AF_INET6;
}

int
tr_addr_family(const tr_addr *a)
{
    return addr_ok(a) ? a->ss.ss_family : AF_UNSPEC;
}

unsigned
tr_addr_port(const tr_addr *a)
{
    switch (tr_addr_family(a)) {
    case AF_INET:
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    case AF_INET6:
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    default:
        return 0;
    }
}

tr_err
tr_addr_from_sockaddr(tr_addr *out, const struct sockaddr *sa, socklen_t len)
{
    if (out == NULL || (sa == NULL && len != 0) || len > sizeof(out->ss)) {
        return TR_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (len != 0) {
        memcpy(&out->ss, sa, len);
    }
    out->len = len;
    return TR_OK;
}

tr_err
tr_addr_unix(tr_addr *out, const char *path)
{
    if (out == NULL || path == NULL || path[0] == '\0') {
        return TR_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
    un->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (path[0] == '@') {
        // Abstract: a leading NUL, then the name; no terminator, the
        // length says where it ends.
        if (n > sizeof(un->sun_path)) {
            return TR_ETOOBIG;
        }
        memcpy(un->sun_path + 1, path + 1, n - 1);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return TR_OK;
    }
    if (n + 1 > sizeof(un->sun_path)) {
        return TR_ETOOBIG;
    }
    memcpy(un->sun_path, path, n + 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return TR_OK;
}

static tr_err
parse_port(const char *s, uint16_t *port)
{
    unsigned v = 0;
    size_t n = 0;
    if (*s == '\0') {
        return TR_EINVAL;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || ++n > 5) {
            return TR_EINVAL;
        }
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > 65535) {
        return TR_EINVAL;
    }
    *port = (uint16_t)v;
    return TR_OK;
}

// looks_like_name: text that a resolver could take for a host name, as
// opposed to a malformed number ("1.2.3.256") or garbage.
static bool
looks_like_name(const char *h)
{
    bool alpha = false;
    for (; *h != '\0'; h++) {
        char c = *h;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_') {
            alpha = true;
        } else if (!((c >= '0' && c <= '9') || c == '.')) {
            return false;
        }
    }
    return alpha;
}

static tr_err
parse_v6(const char *host, size_t hlen, uint16_t port, tr_addr *out)
{
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    if (hlen == 0 || hlen >= sizeof buf) {
        return TR_EINVAL;
    }
    memcpy(buf, host, hlen);
    buf[hlen] = '\0';
    uint32_t scope = 0;
    char *pct = strchr(buf, '%');
    if (pct != NULL) {
        *pct++ = '\0';
        if (*pct == '\0') {
            return TR_EINVAL;
        }
        char *end;
        errno = 0;
        unsigned long v = strtoul(pct, &end, 10);
        if (*end == '\0' && errno == 0 && v <= UINT32_MAX && pct[0] >= '0' && pct[0] <= '9') {
            scope = (uint32_t)v;
        } else {
            scope = if_nametoindex(pct);
            if (scope == 0) {
                return TR_EINVAL;
            }
        }
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1) {
        return TR_EINVAL;
    }
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    s6->sin6_scope_id = scope;
    out->len = sizeof(*s6);
    return TR_OK;
}

tr_err
tr_addr_parse(const char *text, tr_addr *out)
{
    if (text == NULL || out == NULL) {
        return TR_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (strncmp(text, "unix:", 5) == 0) {
        return tr_addr_unix(out, text + 5);
    }
    uint16_t port;
    tr_err rv;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            return TR_EINVAL;
        }
        if ((rv = parse_port(close + 2, &port)) != TR_OK) {
            return rv;
        }
        rv = parse_v6(text + 1, (size_t)(close - text - 1), port, out);
        if (rv != TR_OK) {
            memset(out, 0, sizeof(*out));
        }
        return rv;
    }
    const char *colon = strrchr(text, ':');
    if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL) {
        return TR_EINVAL; // no port, or an IPv6 address without brackets
    }
    if ((rv = parse_port(colon + 1, &port)) != TR_OK) {
        return rv;
    }
    char host[64];
    size_t hlen = (size_t)(colon - text);
    if (hlen >= sizeof host) {
        return looks_like_name(text) ? TR_ENAME : TR_EINVAL;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
    if (hlen == 0) {
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
        return looks_like_name(host) ? TR_ENAME : TR_EINVAL;
    }
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    out->len = sizeof(*s4);
    return TR_OK;
}

// put appends text to buf; false when it did not fit (buf stays
// NUL-terminated, truncated).
static bool
put(char *buf, size_t size, size_t *at, const char *text, size_t n)
{
    if (*at >= size) {
        return false;
    }
    size_t room = size - *at - 1;
    size_t k = n < room ? n : room;
    memcpy(buf + *at, text, k);
    *at += k;
    buf[*at] = '\0';
    return k == n;
}

tr_err
tr_addr_format(const tr_addr *a, char *buf, size_t size)
{
    if (buf == NULL || size == 0) {
        return TR_EINVAL;
    }
    buf[0] = '\0';
    if (!addr_ok(a)) {
        return TR_EINVAL;
    }
    char tmp[INET6_ADDRSTRLEN + IF_NAMESIZE + 16];
    size_t at = 0;
    bool fit;
    switch (a->ss.ss_family) {
    case AF_INET: {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
        char ip[INET_ADDRSTRLEN];
        if (a->len < sizeof(*s4) || inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip) == NULL) {
            return TR_EINVAL;
        }
        int n = snprintf(tmp, sizeof tmp, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
        fit = put(buf, size, &at, tmp, (size_t)n);
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
        char ip[INET6_ADDRSTRLEN];
        if (a->len < sizeof(*s6) || inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip) == NULL) {
            return TR_EINVAL;
        }
        char scope[IF_NAMESIZE + 12] = "";
        if (s6->sin6_scope_id != 0) {
            char ifn[IF_NAMESIZE];
            if (if_indextoname(s6->sin6_scope_id, ifn) != NULL) {
                snprintf(scope, sizeof scope, "%%%s", ifn);
            } else {
                snprintf(scope, sizeof scope, "%%%u", (unsigned)s6->sin6_scope_id);
            }
        }
        int n = snprintf(tmp, sizeof tmp, "[%s%s]:%u", ip, scope, (unsigned)ntohs(s6->sin6_port));
        fit = put(buf, size, &at, tmp, (size_t)n);
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
        size_t plen = a->len - offsetof(struct sockaddr_un, sun_path);
        if (a->len <= offsetof(struct sockaddr_un, sun_path)) {
            plen = 0; // unnamed
        }
        fit = put(buf, size, &at, "unix:", 5);
        if (plen > 0 && un->sun_path[0] == '\0') {
            // Abstract: shown with '@' for each NUL, as ss(8) does.
            for (size_t i = 0; fit && i < plen; i++) {
                char c = un->sun_path[i] == '\0' ? '@' : un->sun_path[i];
                fit = put(buf, size, &at, &c, 1);
            }
        } else if (plen > 0) {
            fit = fit && put(buf, size, &at, un->sun_path, strnlen(un->sun_path, plen));
        }
        break;
    }
    default:
        return TR_EINVAL;
    }
    return fit ? TR_OK : TR_ETOOBIG;
}

// ---------------------------------------------------------------------------
// Stream sockets.

tr_err
tr_net_listen(tr_rt *rt, const tr_addr *addr, int backlog, tr_io **out)
{
    if (rt == NULL || out == NULL || !addr_ok(addr)) {
        return TR_EINVAL;
    }
    int family = addr->ss.ss_family;
    if (!is_inet(family) && family != AF_UNIX) {
        return TR_EINVAL;
    }
    int fd;
    tr_err rv = sock_new(family, SOCK_STREAM, &fd);
    if (rv != TR_OK) {
        return rv;
    }
    if (is_inet(family)) {
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
            goto fail;
        }
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0 ||
        listen(fd, backlog <= 0 ? SOMAXCONN : backlog) != 0) {
        goto fail;
    }
    return io_take(rt, fd, out);

fail:
    rv = tr__errno(errno);
    close(fd);
    return rv;
}

tr_err
tr_tcp_listen(tr_rt *rt, const tr_addr *addr, int backlog, tr_io **out)
{
    if (!is_inet(tr_addr_family(addr))) {
        return TR_EINVAL;
    }
    return tr_net_listen(rt, addr, backlog, out);
}

tr_err
tr_unix_listen(tr_rt *rt, const char *path, int backlog, tr_io **out)
{
    tr_addr a;
    tr_err rv = tr_addr_unix(&a, path);
    if (rv != TR_OK) {
        return rv;
    }
    return tr_net_listen(rt, &a, backlog, out);
}

tr_poll
tr_net_accept(tr_io *lis, tr_cx *cx, tr_io **conn, tr_addr *peer, tr_err *err)
{
    socklen_t len = peer != NULL ? sizeof(peer->ss) : 0;
    struct sockaddr *sa = peer != NULL ? (struct sockaddr *)&peer->ss : NULL;
    if (tr_accept(lis, cx, conn, sa, peer != NULL ? &len : NULL, err) == TR_PENDING) {
        return TR_PENDING;
    }
    if (*err != TR_OK) {
        *conn = NULL;
    }
    if (peer != NULL) {
        peer->len = *err == TR_OK ? len : 0;
    }
    return TR_READY;
}

// unix_connect connects a Unix stream socket in one go (see the notes).
static tr_poll
unix_connect(tr_cx *cx, const tr_addr *addr, tr_io **out, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    int fd;
    tr_err rv = sock_new(AF_UNIX, SOCK_STREAM, &fd);
    if (rv == TR_OK) {
        if (connect(fd, (const struct sockaddr *)&addr->ss, addr->len) == 0) {
            rv = io_take(tr_cx_rt(cx), fd, out);
        } else {
            rv = tr__errno(errno);
            close(fd);
        }
    }
    if (rv != TR_OK) {
        *out = NULL;
    }
    *err = rv;
    return TR_READY;
}

tr_poll
tr_net_connect(tr_net_connect_op *op, tr_cx *cx, const tr_addr *addr, tr_io **out, tr_err *err)
{
    if (op->nc_io == NULL) {
        int family = tr_addr_family(addr);
        if (family == AF_UNIX) {
            return unix_connect(cx, addr, out, err);
        }
        if (!is_inet(family)) {
            *out = NULL;
            *err = TR_EINVAL;
            return TR_READY;
        }
        int fd;
        tr_err rv = sock_new(family, SOCK_STREAM, &fd);
        if (rv == TR_OK) {
            rv = io_take(tr_cx_rt(cx), fd, &op->nc_io);
        }
        if (rv != TR_OK) {
            *out = NULL;
            *err = rv;
            return TR_READY;
        }
        memset(&op->nc_connect, 0, sizeof(op->nc_connect));
    }
    tr_err rv;
    if (tr_connect(op->nc_io, cx, &op->nc_connect, (const struct sockaddr *)&addr->ss, addr->len,
                   &rv) == TR_PENDING) {
        return TR_PENDING;
    }
    tr_io *io = op->nc_io;
    op->nc_io = NULL;
    memset(&op->nc_connect, 0, sizeof(op->nc_connect));
    if (rv == TR_OK) {
        *out = io;
    } else {
        tr_io_close(io);
        *out = NULL;
    }
    *err = rv;
    return TR_READY;
}

tr_poll
tr_tcp_connect(tr_net_connect_op *op, tr_cx *cx, const tr_addr *addr, tr_io **out, tr_err *err)
{
    if (op->nc_io == NULL && !is_inet(tr_addr_family(addr))) {
        *out = NULL;
        *err = TR_EINVAL;
        return TR_READY;
    }
    return tr_net_connect(op, cx, addr, out, err);
}

tr_poll
tr_unix_connect(tr_net_connect_op *op, tr_cx *cx, const char *path, tr_io **out, tr_err *err)
{
    (void)op; // a Unix connect holds nothing across polls
    tr_addr a;
    tr_err rv = tr_addr_unix(&a, path);
    if (rv != TR_OK) {
        *out = NULL;
        *err = rv;
        return TR_READY;
    }
    return unix_connect(cx, &a, out, err);
}

void
tr_net_connect_abandon(tr_net_connect_op *op)
{
    if (op != NULL && op->nc_io != NULL) {
        tr_io_close(op->nc_io);
        op->nc_io = NULL;
        memset(&op->nc_connect, 0, sizeof(op->nc_connect));
    }
}

tr_err
tr_tcp_set_nodelay(tr_io *io, bool on)
{
    int fd = io_fd(io);
    if (fd < 0) {
        return TR_ECLOSED;
    }
    int v = on ? 1 : 0;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0) {
        return tr__errno(errno);
    }
    return TR_OK;
}

static tr_err
sock_name(const tr_io *io, tr_addr *out, bool peer)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    int fd = io_fd(io);
    if (fd < 0) {
        return TR_ECLOSED;
    }
    socklen_t len = sizeof(out->ss);
    int r = peer ? getpeername(fd, (struct sockaddr *)&out->ss, &len)
                 : getsockname(fd, (struct sockaddr *)&out->ss, &len);
    if (r != 0) {
        return tr__errno(errno);
    }
    out->len = len;
    return TR_OK;
}

tr_err
tr_net_local_addr(const tr_io *io, tr_addr *out)
{
    return sock_name(io, out, false);
}

tr_err
tr_net_peer_addr(const tr_io *io, tr_addr *out)
{
    return sock_name(io, out, true);
}

// ---------------------------------------------------------------------------
// Datagrams.

static tr_err
dgram_bind(tr_rt *rt, const tr_addr *addr, tr_io **out)
{
    int fd;
    tr_err rv = sock_new(addr->ss.ss_family, SOCK_DGRAM, &fd);
    if (rv != TR_OK) {
        return rv;
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0) {
        rv = tr__errno(errno);
        close(fd);
        return rv;
    }
    return io_take(rt, fd, out);
}

tr_err
tr_udp_bind(tr_rt *rt, const tr_addr *addr, tr_io **out)
{
    if (rt == NULL || out == NULL || !is_inet(tr_addr_family(addr))) {
        return TR_EINVAL;
    }
    return dgram_bind(rt, addr, out);
}

tr_err
tr_udp_socket(tr_rt *rt, int family, tr_io **out)
{
    if (rt == NULL || out == NULL || !is_inet(family)) {
        return TR_EINVAL;
    }
    int fd;
    tr_err rv = sock_new(family, SOCK_DGRAM, &fd);
    if (rv != TR_OK) {
        return rv;
    }
    return io_take(rt, fd, out);
}

tr_err
tr_net_dgram_connect(tr_io *io, const tr_addr *peer)
{
    if (!addr_ok(peer)) {
        return TR_EINVAL;
    }
    int fd = io_fd(io);
    if (fd < 0) {
        return TR_ECLOSED;
    }
    if (connect(fd, (const struct sockaddr *)&peer->ss, peer->len) != 0) {
        return tr__errno(errno);
    }
    return TR_OK;
}

tr_poll
tr_net_sendto(tr_io *io, tr_cx *cx, const void *buf, size_t len, const tr_addr *to, size_t *n,
              tr_err *err)
{
    if (!addr_ok(to)) {
        *n = 0;
        *err = TR_EINVAL;
        return TR_READY;
    }
    return tr_sendto(io, cx, buf, len, 0, (const struct sockaddr *)&to->ss, to->len, n, err);
}

tr_poll
tr_net_recvfrom(tr_io *io, tr_cx *cx, void *buf, size_t len, tr_addr *from, size_t *n, tr_err *err)
{
    if (from == NULL) {
        return tr_recvfrom(io, cx, buf, len, 0, NULL, NULL, n, err);
    }
    socklen_t sl = sizeof(from->ss);
    if (tr_recvfrom(io, cx, buf, len, 0, (struct sockaddr *)&from->ss, &sl, n, err) == TR_PENDING) {
        return TR_PENDING;
    }
    if (*err != TR_OK || sl == 0 || sl > sizeof(from->ss)) {
        memset(from, 0, sizeof(*from)); // no address (or an error)
    } else {
        from->len = sl;
    }
    return TR_READY;
}

// ---------------------------------------------------------------------------
// Unix-domain extras.

tr_err
tr_unix_dgram_bind(tr_rt *rt, const char *path, tr_io **out)
{
    if (rt == NULL || out == NULL) {
        return TR_EINVAL;
    }
    tr_addr a;
    tr_err rv = tr_addr_unix(&a, path);
    if (rv != TR_OK) {
        return rv;
    }
    return dgram_bind(rt, &a, out);
}

tr_err
tr_unix_pair(tr_rt *rt, int type, tr_io **a, tr_io **b)
{
    if (rt == NULL || a == NULL || b == NULL ||
        (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET)) {
        return TR_EINVAL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        return tr__errno(errno);
    }
    tr_err rv = fd_high(&sv[0]);
    if (rv != TR_OK) {
        close(sv[1]);
        return rv;
    }
    if ((rv = fd_high(&sv[1])) != TR_OK) {
        close(sv[0]);
        return rv;
    }
    if ((rv = tr_io_open(rt, sv[0], 0, a)) != TR_OK) {
        close(sv[0]);
        close(sv[1]);
        return rv;
    }
    if ((rv = io_take(rt, sv[1], b)) != TR_OK) {
        tr_io_close(*a);
        *a = NULL;
        return rv;
    }
    return TR_OK;
}

tr_err
tr_unix_peer_cred(const tr_io *io, tr_peer_cred *out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    int fd = io_fd(io);
    if (fd < 0) {
        return TR_ECLOSED;
    }
    struct ucred uc;
    socklen_t len = sizeof uc;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) {
        return tr__errno(errno);
    }
    out->pid = uc.pid;
    out->uid = uc.uid;
    out->gid = uc.gid;
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Pipes.

tr_err
tr_pipe(tr_rt *rt, tr_io **rd, tr_io **wr)
{
    if (rt == NULL || rd == NULL || wr == NULL) {
        return TR_EINVAL;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
        return tr__errno(errno);
    }
    tr_err rv = fd_high(&p[0]);
    if (rv != TR_OK) {
        close(p[1]);
        return rv;
    }
    if ((rv = fd_high(&p[1])) != TR_OK) {
        close(p[0]);
        return rv;
    }
    if ((rv = tr_io_open(rt, p[0], 0, rd)) != TR_OK) {
        close(p[0]);
        close(p[1]);
        return rv;
    }
    if ((rv = io_take(rt, p[1], wr)) != TR_OK) {
        tr_io_close(*rd);
        *rd = NULL;
        return rv;
    }
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Name resolution: getaddrinfo as a job of the blocking pool.

typedef tr__job job;

// resolve_err maps a getaddrinfo result (errno_saved for EAI_SYSTEM).
static tr_err
resolve_err(int rc, int errno_saved)
{
    switch (rc) {
    case 0:
        return TR_OK;
    case EAI_AGAIN:
        return TR_EAGAIN;
    case EAI_MEMORY:
        return TR_ENOMEM;
    case EAI_BADFLAGS:
    case EAI_FAMILY:
    case EAI_SOCKTYPE:
        return TR_EINVAL;
    case EAI_OVERFLOW:
        return TR_ETOOBIG;
    case EAI_SYSTEM:
        return tr_err_from_errno(errno_saved);
    default:
        // EAI_NONAME, EAI_NODATA, EAI_ADDRFAMILY, EAI_FAIL, EAI_SERVICE.
        return TR_ENAME;
    }
}

static void
run_resolve(job *j)
{
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(j->j_host, j->j_service, j->j_has_hints ? &j->j_hints : NULL, &ai);
    j->j_err = resolve_err(rc, errno);
    if (rc == 0) {
        j->j_ai = ai;
    }
}

tr_poll
tr_resolve(tr_blocking_op *op, tr_cx *cx, const char *host, const char *service,
           const struct addrinfo *hints, struct addrinfo **res, tr_err *err)
{
    job *j;
    switch (tr__blocking_step(op, cx, TR__JOB_RESOLVE, &j)) {
    case TR__STEP_PENDING:
        return TR_PENDING;
    case TR__STEP_BAD:
        *res = NULL;
        *err = TR_EINVAL;
        return TR_READY;
    case TR__STEP_START: {
        *res = NULL;
        if (host == NULL && service == NULL) {
            *err = TR_ENAME; // what getaddrinfo says (EAI_NONAME)
            return TR_READY;
        }
        size_t hlen = host != NULL ? strlen(host) + 1 : 0;
        size_t slen = service != NULL ? strlen(service) + 1 : 0;
        j = tr__job_new(TR__JOB_RESOLVE, hlen + slen, run_resolve);
        if (host != NULL) {
            memcpy(j->j_data, host, hlen);
            j->j_host = (const char *)j->j_data;
        }
        if (service != NULL) {
            memcpy(j->j_data + hlen, service, slen);
            j->j_service = (const char *)j->j_data + hlen;
        }
        if (hints != NULL) {
            j->j_has_hints = true;
            j->j_hints.ai_flags = hints->ai_flags;
            j->j_hints.ai_family = hints->ai_family;
            j->j_hints.ai_socktype = hints->ai_socktype;
            j->j_hints.ai_protocol = hints->ai_protocol;
        }
        return tr__blocking_launch(op, cx, j, err);
    }
    case TR__STEP_DONE:
        break;
    }
    *err = tr__blocking_status(j);
    *res = NULL;
    if (*err == TR_OK) {
        *res = j->j_ai; // handed over
        j->j_ai = NULL;
    }
    tr__blocking_release(op, j);
    return TR_READY;
}

void
tr_resolve_free(struct addrinfo *res)
{
    if (res != NULL) {
        freeaddrinfo(res);
    }
}
