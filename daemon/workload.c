// Design notes.
//
// Two passes. The first drives libyaml's event parser and builds a small
// tree of nodes (scalar, sequence, mapping; each with its line:column) in
// two growable arrays: the nodes, linked by index (first child, next
// sibling), and the scalars' bytes, each NUL-terminated. That pass refuses
// everything that is about YAML rather than about jobs: syntax errors,
// anchors and aliases (so an alias bomb never expands: we never resolve
// one), unknown tags, non-scalar keys, duplicate keys, a second document,
// and the size limits (nesting, scalar length, node count). It uses an
// explicit stack bounded by TRD_WL_MAX_DEPTH, never recursion, and the
// parser and every event are deleted on every path.
//
// The second pass walks the tree, whose shape it knows (root mapping ->
// jobs sequence -> job mapping -> field), so its loops nest a fixed number
// of levels deep. It fills the SubmitBatch directly in the tr_msg's arena:
// first the defaults (a JobSpec of their own plus a mask of the fields
// they set), then one "template" per job as written, with the defaults'
// fields copied in (pointers: the arena holds one copy of a default for
// every job that takes it). Then the names are resolved through a hash
// table (the written names, seeded from AT_RANDOM so that crafted names
// cannot collide on purpose), the dependency graph of the templates is
// checked for cycles with an iterative depth-first search (O(V + E), an
// explicit stack), and the templates are expanded into JobSpecs, replicas
// sharing everything but their name, env array and TROUPE_INDEX.
//
// Amplification. Replicas multiply what a job carries (10,000 replicas of
// a 1 MiB stdin would pack to 10 GB, and an `after` naming a replicated job
// from a replicated job is quadratic), so each template has a cost, about
// the bytes it packs to, and the sum of cost x replicas must stay under
// TRD_WL_MAX_BATCH; it is checked before anything is expanded.
//
// Errors name the first problem found: the first pass's in file order,
// then the second pass's in file order, then references, then cycles.
#include "workload.h"

#include "request.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include <yaml.h>

// ---------------------------------------------------------------------------
// Memory (out of memory aborts, as tr_alloc does).

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n == 0 ? 1 : n);
    if (q == NULL) {
        fprintf(stderr, "troupe: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

static void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n == 0 ? 1 : n, size);
    if (p == NULL) {
        fprintf(stderr, "troupe: out of memory (%zu x %zu bytes)\n", n, size);
        abort();
    }
    return p;
}

// ---------------------------------------------------------------------------
// The tree.

enum { N_SCALAR, N_SEQ, N_MAP };

// A node. Index 0 is no node. A mapping's children alternate key, value.
typedef struct wl_node {
    uint8_t n_kind;
    bool n_plain;    // scalar: resolved by its content (a plain or int/bool/... tagged one)
    uint32_t n_line; // 1-based
    uint32_t n_col;  // 1-based
    uint32_t n_len;  // scalar: bytes; collection: children
    uint32_t n_a;    // scalar: offset of its bytes in w_text; collection: first child
    uint32_t n_next; // next sibling
} wl_node;

// A slot of a name table: a node whose scalar is the key, and a value.
typedef struct wl_slot {
    uint32_t s_node; // 0: empty
    uint32_t s_val;
} wl_slot;

typedef struct wl_tab {
    wl_slot *t_slots;
    size_t t_mask;
} wl_tab;

// The fields of a job, for the defaults' mask.
enum jf {
    JF_NAME,
    JF_TASK,
    JF_GROUP,
    JF_AFTER,
    JF_ON_DEP,
    JF_REPLICAS,
    JF_RETRIES,
    JF_BACKOFF,
    JF_BACKOFF_MAX,
    JF_TIMEOUT,
    JF_KILL_GRACE,
    JF_ENV,
    JF_CWD,
    JF_STDIN,
    JF_PRIORITY,
    JF_SLOTS,
    JF_LABELS,
    JF_RLIMITS,
    JF_COUNT
};

// A job as parsed: its fields, and where they came from.
typedef struct wl_job {
    Troupe__V1__JobSpec *j_spec;
    uint32_t j_set;             // 1 << JF_*: fields set
    uint32_t j_key[JF_COUNT];   // the key node of each field set
    uint32_t j_val[JF_COUNT];   // its value node
    uint64_t j_cost[JF_COUNT];  // about the bytes each field packs to
    uint32_t j_node;            // the job's mapping
    uint32_t j_replicas;        // 0: no replicas key
    uint32_t j_edge0, j_nedges; // its targets in w_edges
    uint64_t j_after_jobs;      // JobSpecs its after expands to
    uint64_t j_after_cost;      // what its expanded after packs to
} wl_job;

typedef struct wl {
    const char *w_src;
    size_t w_len;
    trd_diag *w_diag;
    uint64_t w_seed;

    wl_node *w_nodes;
    uint32_t w_nnodes, w_capnodes;
    char *w_text;
    size_t w_ntext, w_captext;
    uint32_t w_root;

    tr_msg *w_msg;
    Troupe__V1__SubmitBatch *w_batch;
    wl_job w_def;   // the defaults
    wl_job *w_jobs; // templates, as written
    uint32_t w_njobs;
    uint64_t w_total;  // JobSpecs after replicas
    wl_tab w_names;    // written job name -> template
    uint32_t *w_edges; // targets (template indices) of every after, by template
    uint32_t w_nedges;
} wl;

// ---------------------------------------------------------------------------
// Errors.

static tr_err __attribute__((format(printf, 5, 6)))
fail_at(wl *w, tr_err rv, uint32_t line, uint32_t col, const char *fmt, ...)
{
    trd_diag *d = w->w_diag;
    d->line = line;
    d->column = col;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof d->msg) {
        memcpy(d->msg + sizeof d->msg - 4, "...", 4);
    }
    return rv;
}

#define FAIL(w, node, ...) \
    fail_at((w), TR_EINVAL, (w)->w_nodes[node].n_line, (w)->w_nodes[node].n_col, __VA_ARGS__)
#define TOOBIG(w, node, ...) \
    fail_at((w), TR_ETOOBIG, (w)->w_nodes[node].n_line, (w)->w_nodes[node].n_col, __VA_ARGS__)

// quote writes s (n bytes) for a message: in double quotes, at most 48 bytes
// of it (then ...), control bytes as '?'.
typedef struct quoted {
    char q[56];
} quoted;

static quoted
quote(const char *s, size_t n)
{
    quoted r;
    size_t k = 0, max = 48;
    r.q[k++] = '"';
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        r.q[k++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (n > max) {
        memcpy(r.q + k, "...", 3);
        k += 3;
    }
    r.q[k++] = '"';
    r.q[k] = '\0';
    return r;
}

static const char *
text_of(const wl *w, uint32_t n)
{
    return w->w_text + w->w_nodes[n].n_a;
}

static quoted
quote_node(const wl *w, uint32_t n)
{
    return quote(text_of(w, n), w->w_nodes[n].n_len);
}

static const char *
kind_name(const wl *w, uint32_t n)
{
    static const char *const names[] = {"a scalar", "a sequence", "a mapping"};
    return names[w->w_nodes[n].n_kind];
}

// ---------------------------------------------------------------------------
// Hashing: a seeded mix of 8-byte words (the seed from the kernel's
// AT_RANDOM bytes, so collisions cannot be planted in a file).

static uint64_t
mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

static uint64_t
hash_bytes(uint64_t seed, const char *s, size_t n)
{
    uint64_t h = mix(seed ^ (n * 0x9e3779b97f4a7c15ull));
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = mix(h ^ k);
    }
    uint64_t k = 0;
    memcpy(&k, s, n);
    return mix(h ^ k ^ ((uint64_t)n << 56));
}

static void
tab_init(wl_tab *t, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    t->t_slots = xcalloc(cap, sizeof t->t_slots[0]);
    t->t_mask = cap - 1;
}

static void
tab_fini(wl_tab *t)
{
    free(t->t_slots);
    t->t_slots = NULL;
}

// tab_find returns the slot holding the key s (n bytes), or the empty slot
// where it would go.
static wl_slot *
tab_find(const wl *w, const wl_tab *t, const char *s, size_t n)
{
    size_t i = (size_t)hash_bytes(w->w_seed, s, n) & t->t_mask;
    for (;; i = (i + 1) & t->t_mask) {
        wl_slot *sl = &t->t_slots[i];
        if (sl->s_node == 0) {
            return sl;
        }
        const wl_node *k = &w->w_nodes[sl->s_node];
        if (k->n_len == n && memcmp(w->w_text + k->n_a, s, n) == 0) {
            return sl;
        }
    }
}

// ---------------------------------------------------------------------------
// Pass 1: events to tree.

typedef struct open_coll {
    uint32_t o_node;
    uint32_t o_last; // its last child, 0: none yet
} open_coll;

// reader_position turns a byte offset of the input into a line:column.
static void
reader_position(const wl *w, size_t off, uint32_t *line, uint32_t *col)
{
    uint32_t l = 1, c = 1;
    for (size_t i = 0; i < off && i < w->w_len; i++) {
        unsigned char b = (unsigned char)w->w_src[i];
        if (b == '\n') {
            l++;
            c = 1;
        } else if ((b & 0xc0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static tr_err
syntax_error(wl *w, const yaml_parser_t *p)
{
    const char *problem = p->problem != NULL ? p->problem : "syntax error";
    uint32_t line, col;
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return fail_at(w, TR_ENOMEM, 1, 1, "out of memory");
    case YAML_READER_ERROR:
        reader_position(w, p->problem_offset, &line, &col);
        return fail_at(w, TR_EINVAL, line, col, "%s", problem);
    default:
        line = (uint32_t)p->problem_mark.line + 1;
        col = (uint32_t)p->problem_mark.column + 1;
        if (p->context != NULL) {
            return fail_at(w, TR_EINVAL, line, col, "%s (%s at %u:%u)", problem, p->context,
                           (unsigned)p->context_mark.line + 1,
                           (unsigned)p->context_mark.column + 1);
        }
        return fail_at(w, TR_EINVAL, line, col, "%s", problem);
    }
}

#define STD_TAG "tag:yaml.org,2002:"

// check_tag accepts no tag, `!`, and the standard tags that fit the node's
// kind; *plain tells a scalar whether it is resolved by content.
static bool
check_tag(const char *tag, int kind, bool *plain)
{
    if (tag == NULL) {
        return true;
    }
    if (strcmp(tag, "!") == 0) {
        *plain = false; // `! 5` is the string "5"
        return true;
    }
    size_t n = strlen(STD_TAG);
    if (strncmp(tag, STD_TAG, n) != 0) {
        return false;
    }
    tag += n;
    if (kind == N_SEQ) {
        return strcmp(tag, "seq") == 0;
    }
    if (kind == N_MAP) {
        return strcmp(tag, "map") == 0;
    }
    if (strcmp(tag, "str") == 0) {
        *plain = false;
        return true;
    }
    if (strcmp(tag, "int") == 0 || strcmp(tag, "float") == 0 || strcmp(tag, "bool") == 0 ||
        strcmp(tag, "null") == 0) {
        *plain = true;
        return true;
    }
    return false;
}

// check_dup_keys refuses a mapping that holds one key twice.
static tr_err
check_dup_keys(wl *w, uint32_t map)
{
    uint32_t nkeys = w->w_nodes[map].n_len / 2;
    if (nkeys <= 8) {
        // O(n^2) on at most 8 keys beats a table.
        for (uint32_t k = w->w_nodes[map].n_a; k != 0;
             k = w->w_nodes[w->w_nodes[k].n_next].n_next) {
            for (uint32_t e = w->w_nodes[map].n_a; e != k;
                 e = w->w_nodes[w->w_nodes[e].n_next].n_next) {
                if (w->w_nodes[e].n_len == w->w_nodes[k].n_len &&
                    memcmp(text_of(w, e), text_of(w, k), w->w_nodes[k].n_len) == 0) {
                    return FAIL(w, k, "duplicate key %s (first at %u:%u)", quote_node(w, k).q,
                                w->w_nodes[e].n_line, w->w_nodes[e].n_col);
                }
            }
        }
        return TR_OK;
    }
    wl_tab t;
    tab_init(&t, nkeys);
    tr_err rv = TR_OK;
    for (uint32_t k = w->w_nodes[map].n_a; k != 0; k = w->w_nodes[w->w_nodes[k].n_next].n_next) {
        wl_slot *sl = tab_find(w, &t, text_of(w, k), w->w_nodes[k].n_len);
        if (sl->s_node != 0) {
            rv = FAIL(w, k, "duplicate key %s (first at %u:%u)", quote_node(w, k).q,
                      w->w_nodes[sl->s_node].n_line, w->w_nodes[sl->s_node].n_col);
            break;
        }
        sl->s_node = k;
    }
    tab_fini(&t);
    return rv;
}

// add_node appends a node at the event's start and links it under the
// innermost open collection (or makes it the root).
static tr_err
add_node(wl *w, const yaml_event_t *ev, int kind, open_coll *stack, uint32_t depth, uint32_t *out)
{
    uint32_t line = (uint32_t)ev->start_mark.line + 1, col = (uint32_t)ev->start_mark.column + 1;
    if (w->w_nnodes >= TRD_WL_MAX_NODES) {
        return fail_at(w, TR_ETOOBIG, line, col, "more than %u YAML nodes", TRD_WL_MAX_NODES);
    }
    if (depth > 0 && w->w_nodes[stack[depth - 1].o_node].n_kind == N_MAP &&
        w->w_nodes[stack[depth - 1].o_node].n_len % 2 == 0 && kind != N_SCALAR) {
        return fail_at(w, TR_EINVAL, line, col, "a mapping key must be a scalar");
    }
    if (w->w_nnodes == w->w_capnodes) {
        w->w_capnodes = w->w_capnodes == 0 ? 256 : w->w_capnodes * 2;
        w->w_nodes = xrealloc(w->w_nodes, (size_t)w->w_capnodes * sizeof w->w_nodes[0]);
    }
    uint32_t n = w->w_nnodes++;
    w->w_nodes[n] = (wl_node){.n_kind = (uint8_t)kind, .n_line = line, .n_col = col};
    if (depth == 0) {
        w->w_root = n;
    } else {
        open_coll *o = &stack[depth - 1];
        if (o->o_last == 0) {
            w->w_nodes[o->o_node].n_a = n;
        } else {
            w->w_nodes[o->o_last].n_next = n;
        }
        o->o_last = n;
        w->w_nodes[o->o_node].n_len++;
    }
    *out = n;
    return TR_OK;
}

static tr_err
add_scalar(wl *w, const yaml_event_t *ev, open_coll *stack, uint32_t depth)
{
    size_t len = ev->data.scalar.length;
    if (len > TRD_WL_MAX_SCALAR) {
        return fail_at(w, TR_ETOOBIG, (uint32_t)ev->start_mark.line + 1,
                       (uint32_t)ev->start_mark.column + 1, "a scalar longer than %u bytes",
                       TRD_WL_MAX_SCALAR);
    }
    uint32_t n;
    tr_err rv = add_node(w, ev, N_SCALAR, stack, depth, &n);
    if (rv != TR_OK) {
        return rv;
    }
    // The text is at most the input plus a NUL per node (below 16 MiB + 4M).
    if (w->w_ntext + len + 1 > w->w_captext) {
        while (w->w_ntext + len + 1 > w->w_captext) {
            w->w_captext = w->w_captext == 0 ? 4096 : w->w_captext * 2;
        }
        w->w_text = xrealloc(w->w_text, w->w_captext);
    }
    memcpy(w->w_text + w->w_ntext, ev->data.scalar.value, len);
    w->w_text[w->w_ntext + len] = '\0';
    w->w_nodes[n].n_a = (uint32_t)w->w_ntext;
    w->w_nodes[n].n_len = (uint32_t)len;
    w->w_ntext += len + 1;
    bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (!check_tag((const char *)ev->data.scalar.tag, N_SCALAR, &plain)) {
        return FAIL(
            w, n, "tag %s is not allowed (only the standard ones)",
            quote((const char *)ev->data.scalar.tag, strlen((char *)ev->data.scalar.tag)).q);
    }
    w->w_nodes[n].n_plain = plain;
    return TR_OK;
}

// on_event adds one event to the tree; *depth counts the open collections.
static tr_err
on_event(wl *w, const yaml_event_t *ev, open_coll *stack, uint32_t *depth, uint32_t *docs)
{
    uint32_t line = (uint32_t)ev->start_mark.line + 1, col = (uint32_t)ev->start_mark.column + 1;
    const yaml_char_t *anchor = NULL, *tag = NULL;
    int kind = N_SCALAR;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*docs > 1) {
            return fail_at(w, TR_EINVAL, line, col, "a workload file holds one YAML document");
        }
        return TR_OK;
    case YAML_ALIAS_EVENT:
        return fail_at(w, TR_EINVAL, line, col, "YAML aliases are not allowed (*%s)",
                       (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        kind = N_SEQ;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        kind = N_MAP;
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        uint32_t n = stack[--*depth].o_node;
        return ev->type == YAML_MAPPING_END_EVENT ? check_dup_keys(w, n) : TR_OK;
    }
    default:
        return TR_OK;
    }
    if (anchor != NULL) {
        return fail_at(w, TR_EINVAL, line, col, "YAML anchors are not allowed (&%s)",
                       (const char *)anchor);
    }
    if (kind == N_SCALAR) {
        return add_scalar(w, ev, stack, *depth);
    }
    bool plain = false;
    if (!check_tag((const char *)tag, kind, &plain)) {
        return fail_at(w, TR_EINVAL, line, col, "tag %s is not allowed (only the standard ones)",
                       quote((const char *)tag, strlen((const char *)tag)).q);
    }
    if (*depth >= TRD_WL_MAX_DEPTH) {
        return fail_at(w, TR_ETOOBIG, line, col, "nested deeper than %u levels", TRD_WL_MAX_DEPTH);
    }
    uint32_t n;
    tr_err rv = add_node(w, ev, kind, stack, *depth, &n);
    if (rv == TR_OK) {
        stack[(*depth)++] = (open_coll){.o_node = n};
    }
    return rv;
}

static tr_err
build_tree(wl *w)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        return fail_at(w, TR_ENOMEM, 1, 1, "out of memory");
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)w->w_src, w->w_len);
    open_coll stack[TRD_WL_MAX_DEPTH];
    uint32_t depth = 0, docs = 0;
    tr_err rv = TR_OK;
    for (bool end = false; !end && rv == TR_OK;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rv = syntax_error(w, &p);
            break;
        }
        end = ev.type == YAML_STREAM_END_EVENT;
        rv = on_event(w, &ev, stack, &depth, &docs);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rv;
}

// ---------------------------------------------------------------------------
// Pass 2: scalars.

#define KEY_VALUE_FOREACH(w, map, k, v)                                                       \
    for (uint32_t k = (w)->w_nodes[map].n_a, v = k != 0 ? (w)->w_nodes[k].n_next : 0; k != 0; \
         k = (w)->w_nodes[v].n_next, v = k != 0 ? (w)->w_nodes[k].n_next : 0)

#define SEQ_FOREACH(w, seq, e) \
    for (uint32_t e = (w)->w_nodes[seq].n_a; e != 0; e = (w)->w_nodes[e].n_next)

static bool
is_null(const wl *w, uint32_t n)
{
    const wl_node *x = &w->w_nodes[n];
    if (x->n_kind != N_SCALAR || !x->n_plain) {
        return false;
    }
    const char *s = text_of(w, n);
    return x->n_len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static bool
key_is(const wl *w, uint32_t k, const char *s)
{
    return strcmp(text_of(w, k), s) == 0 && strlen(s) == w->w_nodes[k].n_len;
}

static tr_err
want_kind(wl *w, uint32_t n, int kind, const char *what)
{
    static const char *const names[] = {"a scalar", "a sequence", "a mapping"};
    if (w->w_nodes[n].n_kind != kind) {
        return FAIL(w, n, "%s: expected %s, not %s", what, names[kind], kind_name(w, n));
    }
    return TR_OK;
}

// want_str takes a string scalar (not null); nul: whether it may hold a
// NUL byte (a C string may not).
static tr_err
want_str(wl *w, uint32_t n, const char *what, bool nul, const char **s, size_t *len)
{
    if (w->w_nodes[n].n_kind != N_SCALAR) {
        return FAIL(w, n, "%s: expected a string, not %s", what, kind_name(w, n));
    }
    if (is_null(w, n)) {
        return FAIL(w, n, "%s: expected a string, not null", what);
    }
    *s = text_of(w, n);
    *len = w->w_nodes[n].n_len;
    if (!nul && memchr(*s, '\0', *len) != NULL) {
        return FAIL(w, n, "%s: a NUL byte in a string", what);
    }
    return TR_OK;
}

// parse_uint parses [+-]?[0-9]+ into a sign and a magnitude: 0 if it is
// not an integer, 1 if it is, 2 if its magnitude passes 64 bits.
static int
parse_uint(const char *s, size_t n, bool *neg, uint64_t *v)
{
    size_t i = 0;
    *neg = false;
    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        *neg = s[0] == '-';
        i = 1;
    }
    if (i == n) {
        return 0;
    }
    uint64_t x = 0;
    bool over = false;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        unsigned d = (unsigned)(s[i] - '0');
        over = over || x > (UINT64_MAX - d) / 10;
        x = x * 10 + d;
    }
    *v = x;
    return over ? 2 : 1;
}

// want_int takes a plain integer in lo..hi.
static tr_err
want_int(wl *w, uint32_t n, const char *what, int64_t lo, int64_t hi, int64_t *out)
{
    bool neg;
    uint64_t mag;
    int k = w->w_nodes[n].n_kind == N_SCALAR && w->w_nodes[n].n_plain
                ? parse_uint(text_of(w, n), w->w_nodes[n].n_len, &neg, &mag)
                : 0;
    if (k == 0) {
        return FAIL(w, n, "%s: expected an integer", what);
    }
    int64_t v = 0;
    bool fits = k == 1 && mag <= (uint64_t)INT64_MAX + (neg ? 1 : 0);
    if (fits) {
        v = !neg ? (int64_t)mag : mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    }
    if (!fits || v < lo || v > hi) {
        return FAIL(w, n, "%s: out of range (%lld..%lld)", what, (long long)lo, (long long)hi);
    }
    *out = v;
    return TR_OK;
}

// want_u64 takes a plain non-negative integer of 64 bits.
static tr_err
want_u64(wl *w, uint32_t n, const char *what, uint64_t *out)
{
    bool neg;
    uint64_t mag;
    int k = w->w_nodes[n].n_kind == N_SCALAR && w->w_nodes[n].n_plain
                ? parse_uint(text_of(w, n), w->w_nodes[n].n_len, &neg, &mag)
                : 0;
    if (k == 0 || (neg && mag != 0)) {
        return FAIL(w, n, "%s: expected a non-negative integer", what);
    }
    if (k == 2) {
        return FAIL(w, n, "%s: out of range (64 bits)", what);
    }
    *out = mag;
    return TR_OK;
}

static tr_err
want_bool(wl *w, uint32_t n, const char *what, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"}, *const no[] = {"false", "False",
                                                                              "FALSE"};
    if (w->w_nodes[n].n_kind == N_SCALAR && w->w_nodes[n].n_plain) {
        for (int i = 0; i < 3; i++) {
            if (key_is(w, n, yes[i]) || key_is(w, n, no[i])) {
                *out = key_is(w, n, yes[i]);
                return TR_OK;
            }
        }
    }
    return FAIL(w, n, "%s: expected true or false", what);
}

const char *
trd_parse_duration(const char *s, size_t n, uint64_t *out)
{
    static const struct {
        const char *u;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    if (n == 0) {
        return "an empty duration";
    }
    if (s[0] == '-') {
        return "a duration may not be negative";
    }
    uint64_t total = 0;
    size_t i = 0;
    while (i < n) {
        uint64_t whole = 0, frac = 0, scale = 1;
        size_t start = i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (whole > (UINT64_MAX - 9) / 10) {
                return "a duration too long";
            }
            whole = whole * 10 + (uint64_t)(s[i] - '0');
        }
        if (i < n && s[i] == '.') {
            size_t f0 = ++i;
            for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
                if (i - f0 >= 9) {
                    return "a duration with more than 9 decimals";
                }
                frac = frac * 10 + (uint64_t)(s[i] - '0');
                scale *= 10;
            }
            if (i == f0) {
                return "a duration with no digits after its '.'";
            }
        } else if (i == start) {
            return "a duration must start with a number";
        }
        size_t u0 = i;
        while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) {
            i++;
        }
        if (i == u0) {
            return i == n ? "a duration needs a unit (ms, s, m or h)"
                          : "a duration holds something other than numbers and units";
        }
        uint64_t unit = 0;
        for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
            if (strlen(units[k].u) == i - u0 && memcmp(units[k].u, s + u0, i - u0) == 0) {
                unit = units[k].ms;
            }
        }
        if (unit == 0) {
            return "a duration with an unknown unit (ms, s, m or h)";
        }
        // frac < 10^9 and unit <= 3.6e6: the product fits.
        if (frac * unit % scale != 0) {
            return "a duration must be a whole number of milliseconds";
        }
        if (whole > TRD_WL_MAX_DURATION_MS / unit) {
            return "a duration too long";
        }
        total += whole * unit + frac * unit / scale;
        if (total > TRD_WL_MAX_DURATION_MS) {
            return "a duration too long";
        }
    }
    *out = total;
    return NULL;
}

static tr_err
want_duration(wl *w, uint32_t n, const char *what, uint64_t *out)
{
    const char *s = "";
    size_t len = 0;
    tr_err rv = want_str(w, n, what, false, &s, &len);
    if (rv != TR_OK) {
        return rv;
    }
    bool neg;
    uint64_t mag;
    int k = w->w_nodes[n].n_plain ? parse_uint(s, len, &neg, &mag) : 0;
    if (k != 0) {
        if (neg && mag != 0) {
            return FAIL(w, n, "%s: a duration may not be negative", what);
        }
        if (k == 2 || mag > TRD_WL_MAX_DURATION_MS) {
            return FAIL(w, n, "%s: a duration too long", what);
        }
        *out = mag;
        return TR_OK;
    }
    const char *why = trd_parse_duration(s, len, out);
    if (why != NULL) {
        return FAIL(w, n, "%s: %s", what, why);
    }
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Pass 2: a job's fields.

// What a string or an entry of a repeated field costs in the packed batch,
// about (its bytes, a tag, a length).
#define COST(len) ((uint64_t)(len) + 8)
#define JOB_COST 256 // a JobSpec of its own, its env array, its name

static char *
arena_str(wl *w, const char *s, size_t len)
{
    char *p = tr_msg_arena(w->w_msg, len + 1);
    memcpy(p, s, len);
    return p;
}

static tr_err
field_str(wl *w, uint32_t v, const char *what, char **dst, uint64_t *cost)
{
    const char *s = NULL;
    size_t len = 0;
    tr_err rv = want_str(w, v, what, false, &s, &len);
    if (rv == TR_OK) {
        *dst = arena_str(w, s, len);
        *cost += COST(len);
    }
    return rv;
}

// field_plugin parses `plugin: {kind: NAME, args: "bytes"}`: a kind name
// (checked here; whether a plugin registered it, the daemon says) and its
// arguments as the string's bytes (NUL included; none: empty).
static tr_err
field_plugin(wl *w, Troupe__V1__JobSpec *j, uint32_t v, uint64_t *cost)
{
    tr_err rv = want_kind(w, v, N_MAP, "plugin");
    if (rv != TR_OK) {
        return rv;
    }
    Troupe__V1__PluginTask *t = tr_msg_arena(w->w_msg, sizeof *t);
    troupe__v1__plugin_task__init(t);
    uint32_t kind = 0;
    KEY_VALUE_FOREACH(w, v, k, x)
    {
        const char *s;
        size_t len;
        if (key_is(w, k, "kind")) {
            if ((rv = field_str(w, x, "plugin: kind", &t->kind, cost)) != TR_OK) {
                return rv;
            }
            if (!trd_kind_name_ok(t->kind)) {
                return FAIL(w, x,
                            "plugin: kind %s is not a kind name (1 to %d bytes of [A-Za-z0-9_.:-])",
                            quote_node(w, x).q, TR_KIND_NAME_MAX);
            }
            kind = x;
        } else if (key_is(w, k, "args")) {
            if ((rv = want_str(w, x, "plugin: args", true, &s, &len)) != TR_OK) {
                return rv;
            }
            t->args.data = tr_msg_memdup(w->w_msg, s, len);
            t->args.len = len;
            *cost += COST(len);
        } else {
            return FAIL(w, k, "unknown key %s in plugin (kind, args)", quote_node(w, k).q);
        }
    }
    if (kind == 0) {
        return FAIL(w, v, "plugin: needs a kind (the task kind a plugin of the daemon registered)");
    }
    j->task_case = TROUPE__V1__JOB_SPEC__TASK_PLUGIN;
    j->plugin = t;
    return TR_OK;
}

static tr_err
field_task(wl *w, Troupe__V1__JobSpec *j, uint32_t k, uint32_t v, uint64_t *cost)
{
    tr_err rv;
    if (key_is(w, k, "run")) {
        Troupe__V1__ShellTask *t = tr_msg_arena(w->w_msg, sizeof *t);
        troupe__v1__shell_task__init(t);
        if ((rv = field_str(w, v, "run", &t->script, cost)) != TR_OK) {
            return rv;
        }
        j->task_case = TROUPE__V1__JOB_SPEC__TASK_SHELL;
        j->shell = t;
    } else if (key_is(w, k, "exec")) {
        if ((rv = want_kind(w, v, N_SEQ, "exec")) != TR_OK) {
            return rv;
        }
        if (w->w_nodes[v].n_len == 0) {
            return FAIL(w, v, "exec: expected a non-empty sequence (the argv)");
        }
        Troupe__V1__ExecTask *t = tr_msg_arena(w->w_msg, sizeof *t);
        troupe__v1__exec_task__init(t);
        t->argv = tr_msg_arena(w->w_msg, w->w_nodes[v].n_len * sizeof t->argv[0]);
        SEQ_FOREACH(w, v, e)
        {
            if ((rv = field_str(w, e, "exec", &t->argv[t->n_argv], cost)) != TR_OK) {
                return rv;
            }
            t->n_argv++;
        }
        j->task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
        j->exec = t;
    } else if (key_is(w, k, "sleep")) {
        Troupe__V1__SleepTask *t = tr_msg_arena(w->w_msg, sizeof *t);
        troupe__v1__sleep_task__init(t);
        if ((rv = want_duration(w, v, "sleep", &t->ms)) != TR_OK) {
            return rv;
        }
        j->task_case = TROUPE__V1__JOB_SPEC__TASK_SLEEP;
        j->sleep = t;
    } else if (key_is(w, k, "plugin")) {
        if ((rv = field_plugin(w, j, v, cost)) != TR_OK) {
            return rv;
        }
    } else {
        bool yes = false;
        if ((rv = want_bool(w, v, "noop", &yes)) != TR_OK) {
            return rv;
        }
        if (!yes) {
            return FAIL(w, v, "noop: only `noop: true` makes sense");
        }
        Troupe__V1__NoopTask *t = tr_msg_arena(w->w_msg, sizeof *t);
        troupe__v1__noop_task__init(t);
        j->task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
        j->noop = t;
    }
    *cost += 8;
    return TR_OK;
}

// want_map checks that v is a mapping and gives an array of a pointer per
// key, in the arena, for the repeated field it fills.
static tr_err
want_map(wl *w, uint32_t v, const char *what, void **arr)
{
    tr_err rv = want_kind(w, v, N_MAP, what);
    if (rv == TR_OK) {
        *arr = tr_msg_arena(w->w_msg, (w->w_nodes[v].n_len / 2) * sizeof(void *));
    }
    return rv;
}

static bool
reserved_env(const char *s, size_t n)
{
    return (n == 12 && memcmp(s, "TROUPE_INDEX", 12) == 0) ||
           (n == 15 && memcmp(s, "TROUPE_REPLICAS", 15) == 0);
}

// field_env parses a mapping of strings into EnvVars.
static tr_err
field_env(wl *w, Troupe__V1__JobSpec *j, uint32_t v, uint64_t *cost)
{
    void *arr;
    tr_err rv = want_map(w, v, "env", &arr);
    if (rv != TR_OK) {
        return rv;
    }
    j->env = arr;
    KEY_VALUE_FOREACH(w, v, k, x)
    {
        const char *s = text_of(w, k);
        size_t len = w->w_nodes[k].n_len;
        if (len == 0 || memchr(s, '=', len) != NULL || memchr(s, '\0', len) != NULL) {
            return FAIL(w, k, "env: %s is not a variable name (empty, or with '=' or NUL)",
                        quote_node(w, k).q);
        }
        if (reserved_env(s, len)) {
            return FAIL(w, k, "env: %s is reserved (replicas set it)", quote_node(w, k).q);
        }
        Troupe__V1__EnvVar *e = tr_msg_arena(w->w_msg, sizeof *e);
        troupe__v1__env_var__init(e);
        e->name = arena_str(w, s, len);
        *cost += COST(len);
        if ((rv = field_str(w, x, "env", &e->value, cost)) != TR_OK) {
            return rv;
        }
        j->env[j->n_env++] = e;
    }
    return TR_OK;
}

static tr_err
field_labels(wl *w, Troupe__V1__JobSpec *j, uint32_t v, uint64_t *cost)
{
    void *arr;
    tr_err rv = want_map(w, v, "labels", &arr);
    if (rv != TR_OK) {
        return rv;
    }
    j->labels = arr;
    KEY_VALUE_FOREACH(w, v, k, x)
    {
        Troupe__V1__Label *l = tr_msg_arena(w->w_msg, sizeof *l);
        troupe__v1__label__init(l);
        if ((rv = field_str(w, k, "labels", &l->key, cost)) != TR_OK ||
            (rv = field_str(w, x, "labels", &l->value, cost)) != TR_OK) {
            return rv;
        }
        j->labels[j->n_labels++] = l;
    }
    return TR_OK;
}

static tr_err
want_rlim(wl *w, uint32_t n, const char *what, uint64_t *out)
{
    if (w->w_nodes[n].n_kind == N_SCALAR &&
        (key_is(w, n, "unlimited") || key_is(w, n, "infinity"))) {
        *out = UINT64_MAX; // RLIM_INFINITY
        return TR_OK;
    }
    return want_u64(w, n, what, out);
}

static tr_err
field_rlimits(wl *w, Troupe__V1__JobSpec *j, uint32_t v, uint64_t *cost)
{
    // Linux x86-64's RLIMIT_* numbers (asm-generic/resource.h).
    static const struct {
        const char *name;
        int32_t res;
    } names[] = {{"cpu", 0}, {"fsize", 1}, {"data", 2},   {"stack", 3},   {"core", 4},
                 {"rss", 5}, {"nproc", 6}, {"nofile", 7}, {"memlock", 8}, {"as", 9}};
    void *arr;
    tr_err rv = want_map(w, v, "rlimits", &arr);
    if (rv != TR_OK) {
        return rv;
    }
    j->rlimits = arr;
    KEY_VALUE_FOREACH(w, v, k, x)
    {
        int32_t res = -1;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (key_is(w, k, names[i].name)) {
                res = names[i].res;
            }
        }
        if (res < 0) {
            return FAIL(w, k,
                        "rlimits: unknown limit %s (as, core, cpu, data, fsize, memlock, nofile, "
                        "nproc, rss, stack)",
                        quote_node(w, k).q);
        }
        Troupe__V1__RLimit *r = tr_msg_arena(w->w_msg, sizeof *r);
        troupe__v1__rlimit__init(r);
        r->resource = res;
        if (w->w_nodes[x].n_kind == N_MAP) {
            uint32_t soft = 0, hard = 0;
            KEY_VALUE_FOREACH(w, x, k2, x2)
            {
                if (key_is(w, k2, "soft")) {
                    soft = x2;
                    rv = want_rlim(w, x2, "rlimits: soft", &r->soft);
                } else if (key_is(w, k2, "hard")) {
                    hard = x2;
                    rv = want_rlim(w, x2, "rlimits: hard", &r->hard);
                } else {
                    rv = FAIL(w, k2, "rlimits: unknown key %s (soft, hard)", quote_node(w, k2).q);
                }
                if (rv != TR_OK) {
                    return rv;
                }
            }
            if (soft == 0 || hard == 0) {
                return FAIL(w, x, "rlimits: %s needs both soft and hard", quote_node(w, k).q);
            }
            if (r->soft > r->hard) {
                return FAIL(w, soft, "rlimits: the soft limit of %s is above its hard one",
                            quote_node(w, k).q);
            }
        } else {
            if ((rv = want_rlim(w, x, "rlimits", &r->soft)) != TR_OK) {
                return rv;
            }
            r->hard = r->soft;
        }
        *cost += 32;
        j->rlimits[j->n_rlimits++] = r;
    }
    return TR_OK;
}

static tr_err
field_name(wl *w, Troupe__V1__JobSpec *j, uint32_t v, uint64_t *cost)
{
    tr_err rv = field_str(w, v, "name", &j->name, cost);
    if (rv == TR_OK && w->w_nodes[v].n_len == 0) {
        return FAIL(w, v, "name: a job name may not be empty");
    }
    return rv;
}

// field_after only checks the shape here: names resolve once every job is
// known.
static tr_err
field_after(wl *w, uint32_t v)
{
    if (w->w_nodes[v].n_kind == N_SCALAR) {
        const char *s;
        size_t len;
        return want_str(w, v, "after", false, &s, &len);
    }
    tr_err rv = want_kind(w, v, N_SEQ, "after");
    if (rv != TR_OK) {
        return rv;
    }
    SEQ_FOREACH(w, v, e)
    {
        const char *s;
        size_t len;
        if ((rv = want_str(w, e, "after", false, &s, &len)) != TR_OK) {
            return rv;
        }
    }
    return TR_OK;
}

static const struct {
    const char *key;
    enum jf f;
} job_keys[] = {
    {"name", JF_NAME},         {"run", JF_TASK},
    {"exec", JF_TASK},         {"sleep", JF_TASK},
    {"noop", JF_TASK},         {"group", JF_GROUP},
    {"after", JF_AFTER},       {"on_dep_failure", JF_ON_DEP},
    {"replicas", JF_REPLICAS}, {"retries", JF_RETRIES},
    {"backoff", JF_BACKOFF},   {"backoff_max", JF_BACKOFF_MAX},
    {"timeout", JF_TIMEOUT},   {"kill_grace", JF_KILL_GRACE},
    {"env", JF_ENV},           {"cwd", JF_CWD},
    {"stdin", JF_STDIN},       {"priority", JF_PRIORITY},
    {"slots", JF_SLOTS},       {"labels", JF_LABELS},
    {"rlimits", JF_RLIMITS},   {"plugin", JF_TASK},
};

// job_field parses one key: value of a job (or of the defaults).
static tr_err
job_field(wl *w, wl_job *jb, uint32_t k, uint32_t v, bool defaults)
{
    Troupe__V1__JobSpec *j = jb->j_spec;
    const char *where = defaults ? "defaults" : "a job";
    int f = -1;
    for (size_t i = 0; i < sizeof job_keys / sizeof job_keys[0]; i++) {
        if (key_is(w, k, job_keys[i].key)) {
            f = (int)job_keys[i].f;
        }
    }
    if (f < 0) {
        return FAIL(w, k, "unknown key %s in %s", quote_node(w, k).q, where);
    }
    if (defaults && (f == JF_NAME || f == JF_AFTER || f == JF_REPLICAS)) {
        return FAIL(w, k, "%s is not allowed in defaults (only in a job)", text_of(w, k));
    }
    if (f == JF_TASK && (jb->j_set & (1u << JF_TASK)) != 0) {
        return FAIL(w, k,
                    "%s has exactly one of run, exec, sleep, noop and plugin: %s and %s both given",
                    where, text_of(w, jb->j_key[JF_TASK]), text_of(w, k));
    }
    jb->j_set |= 1u << f;
    jb->j_key[f] = k;
    jb->j_val[f] = v;
    uint64_t *cost = &jb->j_cost[f];
    int64_t i;
    tr_err rv = TR_OK;
    switch ((enum jf)f) {
    case JF_NAME:
        return field_name(w, j, v, cost);
    case JF_TASK:
        return field_task(w, j, k, v, cost);
    case JF_GROUP:
        return field_str(w, v, "group", &j->group, cost);
    case JF_AFTER:
        return field_after(w, v);
    case JF_ON_DEP:
        if (w->w_nodes[v].n_kind == N_SCALAR && key_is(w, v, "fail")) {
            j->on_dep_failure = TROUPE__V1__DEP_FAILURE__DEP_FAILURE_FAIL;
        } else if (w->w_nodes[v].n_kind == N_SCALAR && key_is(w, v, "skip")) {
            j->on_dep_failure = TROUPE__V1__DEP_FAILURE__DEP_FAILURE_SKIP;
        } else {
            return FAIL(w, v, "on_dep_failure: expected fail or skip");
        }
        return TR_OK;
    case JF_REPLICAS:
        rv = want_int(w, v, "replicas", 1, TRD_WL_MAX_REPLICAS, &i);
        jb->j_replicas = (uint32_t)i;
        return rv;
    case JF_RETRIES:
        rv = want_int(w, v, "retries", 0, UINT32_MAX, &i);
        j->retries = (uint32_t)i;
        return rv;
    case JF_BACKOFF:
        return want_duration(w, v, "backoff", &j->backoff_ms);
    case JF_BACKOFF_MAX:
        return want_duration(w, v, "backoff_max", &j->backoff_max_ms);
    case JF_TIMEOUT:
        return want_duration(w, v, "timeout", &j->timeout_ms);
    case JF_KILL_GRACE:
        return want_duration(w, v, "kill_grace", &j->kill_grace_ms);
    case JF_ENV:
        return field_env(w, j, v, cost);
    case JF_CWD:
        return field_str(w, v, "cwd", &j->cwd, cost);
    case JF_STDIN: {
        const char *s;
        size_t len;
        if ((rv = want_str(w, v, "stdin", true, &s, &len)) == TR_OK) {
            j->stdin.data = tr_msg_memdup(w->w_msg, s, len);
            j->stdin.len = len;
            *cost += COST(len);
        }
        return rv;
    }
    case JF_PRIORITY:
        rv = want_int(w, v, "priority", INT32_MIN, INT32_MAX, &i);
        j->priority = (int32_t)i;
        return rv;
    case JF_SLOTS:
        rv = want_int(w, v, "slots", 1, UINT32_MAX, &i);
        j->slots = (uint32_t)i;
        return rv;
    case JF_LABELS:
        return field_labels(w, j, v, cost);
    case JF_RLIMITS:
        return field_rlimits(w, j, v, cost);
    case JF_COUNT:
        break;
    }
    return rv;
}

// copy_field copies field f of the defaults into a job (pointers: both
// then share the arena's objects).
static void
copy_field(Troupe__V1__JobSpec *dst, const Troupe__V1__JobSpec *src, enum jf f)
{
    switch (f) {
    case JF_TASK:
        dst->task_case = src->task_case;
        switch (src->task_case) {
        case TROUPE__V1__JOB_SPEC__TASK_EXEC:
            dst->exec = src->exec;
            break;
        case TROUPE__V1__JOB_SPEC__TASK_SHELL:
            dst->shell = src->shell;
            break;
        case TROUPE__V1__JOB_SPEC__TASK_SLEEP:
            dst->sleep = src->sleep;
            break;
        case TROUPE__V1__JOB_SPEC__TASK_PLUGIN:
            dst->plugin = src->plugin;
            break;
        default:
            dst->noop = src->noop;
            break;
        }
        break;
    case JF_GROUP:
        dst->group = src->group;
        break;
    case JF_ON_DEP:
        dst->on_dep_failure = src->on_dep_failure;
        break;
    case JF_RETRIES:
        dst->retries = src->retries;
        break;
    case JF_BACKOFF:
        dst->backoff_ms = src->backoff_ms;
        break;
    case JF_BACKOFF_MAX:
        dst->backoff_max_ms = src->backoff_max_ms;
        break;
    case JF_TIMEOUT:
        dst->timeout_ms = src->timeout_ms;
        break;
    case JF_KILL_GRACE:
        dst->kill_grace_ms = src->kill_grace_ms;
        break;
    case JF_ENV:
        dst->n_env = src->n_env;
        dst->env = src->env;
        break;
    case JF_CWD:
        dst->cwd = src->cwd;
        break;
    case JF_STDIN:
        dst->stdin = src->stdin;
        break;
    case JF_PRIORITY:
        dst->priority = src->priority;
        break;
    case JF_SLOTS:
        dst->slots = src->slots;
        break;
    case JF_LABELS:
        dst->n_labels = src->n_labels;
        dst->labels = src->labels;
        break;
    case JF_RLIMITS:
        dst->n_rlimits = src->n_rlimits;
        dst->rlimits = src->rlimits;
        break;
    default: // name, after, replicas: never in defaults
        break;
    }
}

static Troupe__V1__JobSpec *
new_spec(wl *w)
{
    Troupe__V1__JobSpec *j = tr_msg_arena(w->w_msg, sizeof *j);
    troupe__v1__job_spec__init(j);
    return j;
}

static tr_err
parse_defaults(wl *w, uint32_t v)
{
    w->w_def.j_spec = new_spec(w);
    tr_err rv = want_kind(w, v, N_MAP, "defaults");
    if (rv != TR_OK) {
        return rv; // a scalar's n_a is its text, not a child node
    }
    KEY_VALUE_FOREACH(w, v, k, x)
    {
        if ((rv = job_field(w, &w->w_def, k, x, true)) != TR_OK) {
            return rv;
        }
    }
    return TR_OK;
}

// job_cost is about what one JobSpec of jb packs to, before its after.
static uint64_t
job_cost(const wl_job *jb)
{
    uint64_t c = JOB_COST;
    for (int f = 0; f < JF_COUNT; f++) {
        c += jb->j_cost[f];
    }
    return c;
}

static tr_err
parse_job(wl *w, wl_job *jb, uint32_t node)
{
    *jb = (wl_job){.j_spec = new_spec(w), .j_node = node};
    tr_err rv = want_kind(w, node, N_MAP, "a job");
    if (rv != TR_OK) {
        return rv;
    }
    KEY_VALUE_FOREACH(w, node, k, v)
    {
        if ((rv = job_field(w, jb, k, v, false)) != TR_OK) {
            return rv;
        }
    }
    for (int f = 0; f < JF_COUNT; f++) {
        uint32_t bit = 1u << f;
        if ((w->w_def.j_set & bit) != 0 && (jb->j_set & bit) == 0) {
            copy_field(jb->j_spec, w->w_def.j_spec, (enum jf)f);
            jb->j_cost[f] = w->w_def.j_cost[f];
        }
    }
    if (jb->j_spec->task_case == TROUPE__V1__JOB_SPEC__TASK__NOT_SET) {
        return FAIL(w, node, "a job needs one of run, exec, sleep, noop and plugin");
    }
    uint64_t n = jb->j_replicas == 0 ? 1 : jb->j_replicas;
    uint32_t at = jb->j_replicas == 0 ? node : jb->j_val[JF_REPLICAS];
    if (w->w_total + n > TRD_WL_MAX_JOBS) {
        return TOOBIG(w, at, "more than %u jobs (after replicas)", TRD_WL_MAX_JOBS);
    }
    w->w_total += n;
    if (jb->j_replicas > 0) {
        jb->j_cost[JF_REPLICAS] = 64; // its TROUPE_INDEX and TROUPE_REPLICAS
    }
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Pass 2: the file.

static tr_err
parse_groups(wl *w, uint32_t v)
{
    Troupe__V1__SubmitBatch *b = w->w_batch;
    void *arr;
    tr_err rv = want_map(w, v, "groups", &arr);
    if (rv != TR_OK) {
        return rv;
    }
    b->groups = arr;
    KEY_VALUE_FOREACH(w, v, k, x)
    {
        Troupe__V1__GroupSpec *g = tr_msg_arena(w->w_msg, sizeof *g);
        troupe__v1__group_spec__init(g);
        uint64_t cost = 0;
        if ((rv = field_str(w, k, "groups", &g->name, &cost)) != TR_OK) {
            return rv;
        }
        if (w->w_nodes[k].n_len == 0) {
            return FAIL(w, k, "groups: a group name may not be empty");
        }
        if ((rv = want_kind(w, x, N_MAP, "a group")) != TR_OK) {
            return rv;
        }
        KEY_VALUE_FOREACH(w, x, k2, x2)
        {
            int64_t i;
            if (!key_is(w, k2, "parallel")) {
                return FAIL(w, k2, "unknown key %s in a group (parallel)", quote_node(w, k2).q);
            }
            if ((rv = want_int(w, x2, "parallel", 0, UINT32_MAX, &i)) != TR_OK) {
                return rv;
            }
            g->parallel = (uint32_t)i;
        }
        b->groups[b->n_groups++] = g;
    }
    return TR_OK;
}

static tr_err
parse_version(wl *w, uint32_t v)
{
    // An integer, or MAJOR.MINOR: only the major number must be 1.
    const wl_node *x = &w->w_nodes[v];
    const char *s = text_of(w, v);
    size_t len = x->n_len, dot = 0;
    while (dot < len && s[dot] >= '0' && s[dot] <= '9') {
        dot++;
    }
    bool ok = x->n_kind == N_SCALAR && x->n_plain && dot > 0 &&
              (dot == len || (s[dot] == '.' && dot + 1 < len));
    for (size_t i = dot + 1; ok && i < len; i++) {
        ok = s[i] >= '0' && s[i] <= '9';
    }
    if (!ok) {
        return FAIL(w, v, "version: expected a number");
    }
    if (dot != 1 || s[0] != '1') {
        return FAIL(w, v, "version %.*s is not supported (this troupe reads version 1)",
                    (int)(len > 32 ? 32 : len), s);
    }
    return TR_OK;
}

// resolve_after turns every job's after into template indices (w_edges),
// refusing unknown names, itself and a name given twice, and adds up what
// the expanded names cost.
static tr_err
resolve_after(wl *w)
{
    uint32_t *seen = xcalloc(w->w_njobs, sizeof *seen); // job index + 1 of the last job naming it
    size_t cap = 0;
    tr_err rv = TR_OK;
    for (uint32_t t = 0; t < w->w_njobs && rv == TR_OK; t++) {
        wl_job *jb = &w->w_jobs[t];
        uint32_t v = jb->j_val[JF_AFTER];
        jb->j_edge0 = w->w_nedges;
        if ((jb->j_set & (1u << JF_AFTER)) == 0) {
            continue;
        }
        uint32_t first = w->w_nodes[v].n_kind == N_SCALAR ? v : w->w_nodes[v].n_a;
        uint32_t one = w->w_nodes[v].n_kind == N_SCALAR;
        for (uint32_t e = first; e != 0; e = one ? 0 : w->w_nodes[e].n_next) {
            wl_slot *sl = tab_find(w, &w->w_names, text_of(w, e), w->w_nodes[e].n_len);
            if (sl->s_node == 0) {
                rv = FAIL(w, e, "after: no job is named %s", quote_node(w, e).q);
                break;
            }
            uint32_t to = sl->s_val;
            if (to == t) {
                rv = FAIL(w, e, "after: a job cannot run after itself");
                break;
            }
            if (seen[to] == t + 1) {
                rv = FAIL(w, e, "after: %s named twice", quote_node(w, e).q);
                break;
            }
            seen[to] = t + 1;
            if (w->w_nedges == cap) {
                cap = cap == 0 ? 256 : cap * 2;
                w->w_edges = xrealloc(w->w_edges, cap * sizeof w->w_edges[0]);
            }
            w->w_edges[w->w_nedges++] = to;
            wl_job *tj = &w->w_jobs[to];
            uint64_t n = tj->j_replicas == 0 ? 1 : tj->j_replicas;
            jb->j_after_jobs += n;
            jb->j_after_cost += n * COST(w->w_nodes[sl->s_node].n_len + 7);
        }
        jb->j_nedges = w->w_nedges - jb->j_edge0;
    }
    free(seen);
    return rv;
}

// check_cycles runs an iterative depth-first search over the templates'
// after edges (O(V + E)); a back edge is a cycle, spelt out from the stack.
static tr_err
check_cycles(wl *w)
{
    enum { WHITE, GREY, BLACK };
    uint32_t n = w->w_njobs;
    uint8_t *color = xcalloc(n, 1);
    uint32_t *stack = xcalloc(n, sizeof *stack); // templates on the path
    uint32_t *next = xcalloc(n, sizeof *next);   // each one's next edge
    uint32_t *pos = xcalloc(n, sizeof *pos);     // where a grey one is on the path
    tr_err rv = TR_OK;
    for (uint32_t root = 0; root < n && rv == TR_OK; root++) {
        if (color[root] != WHITE) {
            continue;
        }
        uint32_t sp = 0;
        stack[sp++] = root;
        color[root] = GREY;
        pos[root] = 0;
        next[root] = 0;
        while (sp > 0) {
            uint32_t u = stack[sp - 1];
            wl_job *ju = &w->w_jobs[u];
            if (next[u] == ju->j_nedges) {
                color[u] = BLACK;
                sp--;
                continue;
            }
            uint32_t v = w->w_edges[ju->j_edge0 + next[u]++];
            if (color[v] == WHITE) {
                color[v] = GREY;
                pos[v] = sp;
                next[v] = 0;
                stack[sp++] = v;
            } else if (color[v] == GREY) {
                // The cycle is the path from v to u, then v again.
                char buf[sizeof w->w_diag->msg];
                size_t k = 0;
                for (uint32_t i = pos[v]; i <= sp && k < sizeof buf; i++) {
                    const char *nm = w->w_jobs[stack[i == sp ? pos[v] : i]].j_spec->name;
                    int m =
                        snprintf(buf + k, sizeof buf - k, "%s%s", i == pos[v] ? "" : " -> ", nm);
                    k += m < 0 ? 0 : (size_t)m;
                }
                rv = FAIL(w, w->w_jobs[v].j_val[JF_NAME], "dependency cycle: %s", buf);
                break;
            }
        }
    }
    free(pos);
    free(next);
    free(stack);
    free(color);
    return rv;
}

// expand writes the JobSpecs of the batch: each template once, or once per
// replica.
static tr_err
expand(wl *w)
{
    Troupe__V1__SubmitBatch *b = w->w_batch;
    uint64_t cost = 0;
    for (uint32_t t = 0; t < w->w_njobs; t++) {
        wl_job *jb = &w->w_jobs[t];
        uint64_t n = jb->j_replicas == 0 ? 1 : jb->j_replicas;
        cost += n * (job_cost(jb) + jb->j_after_cost);
        if (cost > TRD_WL_MAX_BATCH) {
            return TOOBIG(w, jb->j_node, "the batch would take more than %u MiB (after replicas)",
                          TRD_WL_MAX_BATCH >> 20);
        }
    }
    b->jobs = tr_msg_arena(w->w_msg, w->w_total * sizeof b->jobs[0]);
    char num[24];
    for (uint32_t t = 0; t < w->w_njobs; t++) {
        wl_job *jb = &w->w_jobs[t];
        Troupe__V1__JobSpec *j = jb->j_spec;
        if (jb->j_nedges > 0) {
            // One array of the expanded names, which every replica shares.
            j->after_names = tr_msg_arena(w->w_msg, jb->j_after_jobs * sizeof(char *));
            for (uint32_t e = 0; e < jb->j_nedges; e++) {
                wl_job *to = &w->w_jobs[w->w_edges[jb->j_edge0 + e]];
                if (to->j_replicas == 0) {
                    j->after_names[j->n_after_names++] = to->j_spec->name;
                    continue;
                }
                // Written before its dependants or after: its JobSpecs exist
                // only when it was expanded first, so name them afresh.
                size_t len = strlen(to->j_spec->name);
                for (uint32_t r = 0; r < to->j_replicas; r++) {
                    int m = snprintf(num, sizeof num, "[%u]", r);
                    char *s = tr_msg_arena(w->w_msg, len + (size_t)m + 1);
                    memcpy(s, to->j_spec->name, len);
                    memcpy(s + len, num, (size_t)m);
                    j->after_names[j->n_after_names++] = s;
                }
            }
        }
        if (jb->j_replicas == 0) {
            b->jobs[b->n_jobs++] = j;
            continue;
        }
        Troupe__V1__EnvVar *total = tr_msg_arena(w->w_msg, sizeof *total);
        troupe__v1__env_var__init(total);
        total->name = "TROUPE_REPLICAS";
        snprintf(num, sizeof num, "%u", jb->j_replicas);
        total->value = tr_msg_strdup(w->w_msg, num);
        bool named = j->name[0] != '\0';
        size_t len = strlen(j->name);
        for (uint32_t r = 0; r < jb->j_replicas; r++) {
            Troupe__V1__JobSpec *rj = tr_msg_arena(w->w_msg, sizeof *rj);
            *rj = *j;
            if (named) {
                int m = snprintf(num, sizeof num, "[%u]", r);
                char *s = tr_msg_arena(w->w_msg, len + (size_t)m + 1);
                memcpy(s, j->name, len);
                memcpy(s + len, num, (size_t)m);
                rj->name = s;
                wl_slot *sl = tab_find(w, &w->w_names, s, len + (size_t)m);
                if (sl->s_node != 0) {
                    return FAIL(w, sl->s_node, "job name %s is also the name of a replica of %s",
                                quote(s, len + (size_t)m).q, quote(j->name, len).q);
                }
            }
            Troupe__V1__EnvVar *idx = tr_msg_arena(w->w_msg, sizeof *idx);
            troupe__v1__env_var__init(idx);
            idx->name = "TROUPE_INDEX";
            snprintf(num, sizeof num, "%u", r);
            idx->value = tr_msg_strdup(w->w_msg, num);
            rj->env = tr_msg_arena(w->w_msg, (j->n_env + 2) * sizeof rj->env[0]);
            if (j->n_env > 0) {
                memcpy(rj->env, j->env, j->n_env * sizeof rj->env[0]);
            }
            rj->env[j->n_env] = idx;
            rj->env[j->n_env + 1] = total;
            rj->n_env = j->n_env + 2;
            b->jobs[b->n_jobs++] = rj;
        }
    }
    b->job_count = (uint32_t)b->n_jobs;
    return TR_OK;
}

static tr_err
parse_jobs(wl *w, uint32_t v)
{
    tr_err rv = want_kind(w, v, N_SEQ, "jobs");
    if (rv != TR_OK) {
        return rv;
    }
    uint32_t n = w->w_nodes[v].n_len;
    if (n == 0) {
        return FAIL(w, v, "jobs: expected at least one job");
    }
    if (n > TRD_WL_MAX_JOBS) {
        n = TRD_WL_MAX_JOBS + 1; // parse_job reports the one past the limit
    }
    w->w_jobs = xcalloc(n, sizeof w->w_jobs[0]);
    tab_init(&w->w_names, n);
    SEQ_FOREACH(w, v, e)
    {
        wl_job *jb = &w->w_jobs[w->w_njobs];
        if ((rv = parse_job(w, jb, e)) != TR_OK) {
            return rv;
        }
        w->w_njobs++;
        uint32_t nm = jb->j_val[JF_NAME];
        if (nm != 0) {
            wl_slot *sl = tab_find(w, &w->w_names, text_of(w, nm), w->w_nodes[nm].n_len);
            if (sl->s_node != 0) {
                return FAIL(w, nm, "duplicate job name %s (first at %u:%u)", quote_node(w, nm).q,
                            w->w_nodes[sl->s_node].n_line, w->w_nodes[sl->s_node].n_col);
            }
            *sl = (wl_slot){.s_node = nm, .s_val = w->w_njobs - 1};
        }
    }
    if ((rv = resolve_after(w)) != TR_OK || (rv = check_cycles(w)) != TR_OK) {
        return rv;
    }
    return expand(w);
}

static tr_err
parse_root(wl *w)
{
    if (w->w_root == 0) {
        return fail_at(w, TR_EINVAL, 1, 1, "the file is empty (it needs a jobs list)");
    }
    uint32_t r = w->w_root;
    if (w->w_nodes[r].n_kind != N_MAP) {
        return FAIL(w, r, "a workload is a mapping (version, groups, defaults, jobs), not %s",
                    kind_name(w, r));
    }
    uint32_t version = 0, groups = 0, defaults = 0, jobs = 0;
    KEY_VALUE_FOREACH(w, r, k, v)
    {
        if (key_is(w, k, "version")) {
            version = v;
        } else if (key_is(w, k, "groups")) {
            groups = v;
        } else if (key_is(w, k, "defaults")) {
            defaults = v;
        } else if (key_is(w, k, "jobs")) {
            jobs = v;
        } else {
            return FAIL(w, k, "unknown key %s (version, groups, defaults, jobs)",
                        quote_node(w, k).q);
        }
    }
    tr_err rv;
    if (version != 0 && (rv = parse_version(w, version)) != TR_OK) {
        return rv;
    }
    if (groups != 0 && (rv = parse_groups(w, groups)) != TR_OK) {
        return rv;
    }
    if (defaults != 0 && (rv = parse_defaults(w, defaults)) != TR_OK) {
        return rv;
    }
    if (jobs == 0) {
        return FAIL(w, r, "no jobs: a workload needs a `jobs` sequence");
    }
    return parse_jobs(w, jobs);
}

tr_err
trd_workload_parse(const char *text, size_t len, tr_msg **out, trd_diag *diag)
{
    trd_diag spare;
    wl w = {.w_src = text, .w_len = len, .w_diag = diag != NULL ? diag : &spare};
    memset(w.w_diag, 0, sizeof *w.w_diag);
    *out = NULL;
    if (len > TRD_WL_MAX_FILE) {
        return fail_at(&w, TR_ETOOBIG, 1, 1, "a workload file larger than %u MiB",
                       TRD_WL_MAX_FILE >> 20);
    }
    const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
    if (rnd != NULL) {
        memcpy(&w.w_seed, rnd, sizeof w.w_seed);
    }
    // Node 0 is "no node" (w_root 0: the stream has no document).
    w.w_capnodes = 256;
    w.w_nodes = xcalloc(w.w_capnodes, sizeof w.w_nodes[0]);
    w.w_nnodes = 1;
    tr_err rv = build_tree(&w);
    if (rv == TR_OK) {
        w.w_msg = tr_msg_new(&troupe__v1__submit_batch__descriptor, 0, (void **)&w.w_batch);
        rv = parse_root(&w);
    }
    if (rv == TR_OK) {
        *out = w.w_msg;
    } else if (w.w_msg != NULL) {
        tr_msg_free(w.w_msg);
    }
    tab_fini(&w.w_names);
    free(w.w_edges);
    free(w.w_jobs);
    free(w.w_text);
    free(w.w_nodes);
    return rv;
}
