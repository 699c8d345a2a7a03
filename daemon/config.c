// config.c: trouped's settings from defaults, file, environment and
// flags (config.h).
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum kind { K_STR, K_BOOL, K_COUNT, K_POSITIVE, K_U32, K_WORKERS, K_DURABILITY } kind;

static const struct {
    const char *name;
    kind kind;
} keys[TRD_K_COUNT] = {
    [TRD_K_STATE_DIR] = {"state-dir", K_STR},
    [TRD_K_EPHEMERAL] = {"ephemeral", K_BOOL},
    [TRD_K_LISTEN] = {"listen", K_STR},
    [TRD_K_EVENTS] = {"events", K_STR},
    [TRD_K_TCP] = {"tcp", K_STR},
    [TRD_K_TLS_CERT_KEY] = {"tls-cert-key", K_STR},
    [TRD_K_TOKEN_FILE] = {"token-file", K_STR},
    [TRD_K_INSECURE_TCP] = {"insecure-tcp", K_BOOL},
    [TRD_K_MAX_QUEUED] = {"max-queued", K_COUNT},
    [TRD_K_MAX_RUNNING] = {"max-running", K_U32},
    [TRD_K_OUTPUT_CAP] = {"output-cap", K_POSITIVE},
    [TRD_K_DURABILITY] = {"durability", K_DURABILITY},
    [TRD_K_CGROUP] = {"cgroup", K_STR},
    [TRD_K_PLUGIN_DIR] = {"plugin-dir", K_STR},
    [TRD_K_WORKERS] = {"workers", K_WORKERS},
};

const char *
trd_key_name(trd_key key)
{
    return (unsigned)key < TRD_K_COUNT ? keys[key].name : NULL;
}

bool
trd_key_is_bool(trd_key key)
{
    return (unsigned)key < TRD_K_COUNT && keys[key].kind == K_BOOL;
}

bool
trd_key_lookup(const char *name, trd_key *key)
{
    for (unsigned i = 0; i < TRD_K_COUNT; i++) {
        if (strcmp(keys[i].name, name) == 0) {
            *key = (trd_key)i;
            return true;
        }
    }
    return false;
}

void
trd_config_init(trd_config *c)
{
    *c = (trd_config){
        .max_queued = TRD_MAX_QUEUED_DEFAULT,
        .output_cap = TRD_OUTPUT_CAP_DEFAULT,
        .durability_full = true,
    };
}

static char **
str_field(trd_config *c, trd_key key)
{
    switch (key) {
    case TRD_K_STATE_DIR:
        return &c->state_dir;
    case TRD_K_LISTEN:
        return &c->listen;
    case TRD_K_EVENTS:
        return &c->events;
    case TRD_K_TCP:
        return &c->tcp;
    case TRD_K_TLS_CERT_KEY:
        return &c->tls_cert_key;
    case TRD_K_TOKEN_FILE:
        return &c->token_file;
    case TRD_K_CGROUP:
        return &c->cgroup;
    case TRD_K_PLUGIN_DIR:
        return &c->plugin_dir;
    default:
        return NULL;
    }
}

void
trd_config_free(trd_config *c)
{
    for (unsigned i = 0; i < TRD_K_COUNT; i++) {
        char **f = str_field(c, (trd_key)i);
        if (f != NULL) {
            free(*f);
            *f = NULL;
        }
    }
}

static bool
parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool
parse_count(const char *v, uint64_t *out)
{
    if (v[0] < '0' || v[0] > '9') {
        return false;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = n;
    return true;
}

bool
trd_config_set(trd_config *c, trd_source src, trd_key key, const char *value, char *err,
               size_t errlen)
{
    if ((unsigned)key >= TRD_K_COUNT) {
        snprintf(err, errlen, "no such setting");
        return false;
    }
    if (value == NULL && keys[key].kind != K_BOOL) {
        snprintf(err, errlen, "needs a value");
        return false;
    }
    // Checked whatever the source, so that a bad value is an error even
    // where a higher source overrides it.
    bool b = true;
    uint64_t n = 0;
    switch (keys[key].kind) {
    case K_STR:
        if (value[0] == '\0') {
            snprintf(err, errlen, "an empty value");
            return false;
        }
        break;
    case K_BOOL:
        if (value != NULL && !parse_bool(value, &b)) {
            snprintf(err, errlen, "\"%.64s\" is not a boolean (true or false)", value);
            return false;
        }
        break;
    case K_COUNT:
        if (!parse_count(value, &n)) {
            snprintf(err, errlen, "\"%.64s\" is not a number (0: no cap)", value);
            return false;
        }
        break;
    case K_U32:
        if (!parse_count(value, &n) || n > UINT32_MAX) {
            snprintf(err, errlen, "\"%.64s\" is not a number up to %u (0: no cap)", value,
                     UINT32_MAX);
            return false;
        }
        break;
    case K_WORKERS:
        if (!parse_count(value, &n) || n > 255) {
            snprintf(err, errlen, "\"%.64s\" is not a number up to 255 (0: one per core)", value);
            return false;
        }
        break;
    case K_POSITIVE:
        if (!parse_count(value, &n) || n == 0) {
            snprintf(err, errlen, "\"%.64s\" is not a positive number of bytes", value);
            return false;
        }
        break;
    case K_DURABILITY:
        if (strcmp(value, "full") == 0) {
            b = true;
        } else if (strcmp(value, "process") == 0) {
            b = false;
        } else {
            snprintf(err, errlen, "\"%.64s\": full or process", value);
            return false;
        }
        break;
    }
    if (c->src[key] > src) {
        return true;
    }
    c->src[key] = src;
    switch (key) {
    case TRD_K_EPHEMERAL:
        c->ephemeral = b;
        return true;
    case TRD_K_INSECURE_TCP:
        c->insecure_tcp = b;
        return true;
    case TRD_K_MAX_QUEUED:
        c->max_queued = n;
        return true;
    case TRD_K_MAX_RUNNING:
        c->max_running = n;
        return true;
    case TRD_K_WORKERS:
        c->workers = n;
        return true;
    case TRD_K_OUTPUT_CAP:
        c->output_cap = n;
        return true;
    case TRD_K_DURABILITY:
        c->durability_full = b;
        return true;
    default:
        break;
    }
    char **f = str_field(c, key);
    char *dup = strdup(value);
    if (dup == NULL) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    free(*f);
    *f = dup;
    return true;
}

static bool
is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

bool
trd_config_parse(trd_config *c, const char *text, size_t len, const char *name, char *err,
                 size_t errlen)
{
    bool seen[TRD_K_COUNT] = {false};
    char line[4096];
    size_t lineno = 0, pos = 0;
    while (pos < len) {
        lineno++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        size_t n = end - pos;
        if (n >= sizeof line) {
            snprintf(err, errlen, "%s:%zu: a line over %zu bytes", name, lineno, sizeof line - 1);
            return false;
        }
        if (memchr(text + pos, '\0', n) != NULL) {
            snprintf(err, errlen, "%s:%zu: a NUL byte", name, lineno);
            return false;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos = end + 1;
        // Trim both ends.
        char *s = line;
        while (is_space(*s)) {
            s++;
        }
        size_t sl = strlen(s);
        while (sl > 0 && is_space(s[sl - 1])) {
            s[--sl] = '\0';
        }
        if (s[0] == '\0' || s[0] == '#') {
            continue;
        }
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s:%zu: not `key = value`", name, lineno);
            return false;
        }
        char *k = s, *v = eq + 1;
        char *ke = eq;
        while (ke > k && is_space(ke[-1])) {
            ke--;
        }
        *ke = '\0';
        while (is_space(*v)) {
            v++;
        }
        size_t vl = strlen(v);
        if (vl >= 1 && v[0] == '"') {
            if (vl < 2 || v[vl - 1] != '"') {
                snprintf(err, errlen, "%s:%zu: a quoted value without its closing quote", name,
                         lineno);
                return false;
            }
            v[vl - 1] = '\0';
            v++;
        }
        trd_key key;
        if (k[0] == '\0') {
            snprintf(err, errlen, "%s:%zu: no key before `=`", name, lineno);
            return false;
        }
        if (!trd_key_lookup(k, &key)) {
            snprintf(err, errlen, "%s:%zu: unknown key \"%.64s\" (trouped --help lists them)", name,
                     lineno, k);
            return false;
        }
        if (seen[key]) {
            snprintf(err, errlen, "%s:%zu: %s is set twice", name, lineno, keys[key].name);
            return false;
        }
        seen[key] = true;
        char why[256];
        if (!trd_config_set(c, TRD_SRC_FILE, key, v, why, sizeof why)) {
            snprintf(err, errlen, "%s:%zu: %s: %s", name, lineno, keys[key].name, why);
            return false;
        }
    }
    return true;
}

bool
trd_config_load_file(trd_config *c, const char *path, bool must_exist, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !must_exist) {
            return true;
        }
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "config file %s: not a regular file", path);
        close(fd);
        return false;
    }
    if ((size_t)st.st_size > TRD_CONFIG_FILE_MAX) {
        snprintf(err, errlen, "config file %s: over %zu bytes", path, TRD_CONFIG_FILE_MAX);
        close(fd);
        return false;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    bool ok = buf != NULL;
    while (ok && got <= (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size + 1 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
            ok = false;
        } else if (r == 0) {
            break;
        } else {
            got += (size_t)r;
        }
    }
    close(fd);
    if (ok && got > (size_t)st.st_size) {
        snprintf(err, errlen, "config file %s: grew while read", path);
        ok = false;
    }
    if (buf == NULL) {
        snprintf(err, errlen, "config file %s: out of memory", path);
    }
    ok = ok && trd_config_parse(c, buf, got, path, err, errlen);
    free(buf);
    return ok;
}

bool
trd_config_env(trd_config *c, char *const *envp, void (*warn)(const char *name), char *err,
               size_t errlen)
{
    static const char prefix[] = "TROUPED_";
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        const char *e = envp[i];
        if (strncmp(e, prefix, sizeof prefix - 1) != 0) {
            continue;
        }
        const char *eq = strchr(e, '=');
        if (eq == NULL) {
            continue;
        }
        const char *var = e + sizeof prefix - 1;
        size_t vn = (size_t)(eq - var);
        char name[64];
        bool fits = vn > 0 && vn < sizeof name;
        for (size_t k = 0; fits && k < vn; k++) {
            char ch = var[k];
            if (ch >= 'A' && ch <= 'Z') {
                name[k] = (char)(ch - 'A' + 'a');
            } else if (ch == '_') {
                name[k] = '-';
            } else if (ch >= '0' && ch <= '9') {
                name[k] = ch;
            } else {
                fits = false;
            }
        }
        trd_key key;
        if (fits) {
            name[vn] = '\0';
        }
        if (fits && strcmp(name, "config") == 0) {
            continue;
        }
        if (!fits || !trd_key_lookup(name, &key)) {
            if (warn != NULL) {
                char full[96];
                snprintf(full, sizeof full, "%.*s", (int)(eq - e), e);
                warn(full);
            }
            continue;
        }
        char why[256];
        if (!trd_config_set(c, TRD_SRC_ENV, key, eq + 1, why, sizeof why)) {
            snprintf(err, errlen, "%.*s: %s", (int)(eq - e), e, why);
            return false;
        }
    }
    return true;
}

bool
trd_config_finish(trd_config *c, char *err, size_t errlen)
{
    trd_source se = c->src[TRD_K_EPHEMERAL], sd = c->src[TRD_K_STATE_DIR];
    if (c->ephemeral && c->state_dir != NULL) {
        if (se == sd) {
            snprintf(err, errlen, "ephemeral and state-dir exclude each other");
            return false;
        }
        if (se > sd) {
            free(c->state_dir);
            c->state_dir = NULL;
        } else {
            c->ephemeral = false;
        }
    }
    if (c->insecure_tcp && c->tcp == NULL) {
        snprintf(err, errlen, "insecure-tcp without tcp");
        return false;
    }
    return true;
}
