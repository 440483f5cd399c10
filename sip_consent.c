/* The administrator's opt-in list for URI-list fan-out (sip_consent.h).
 * Patterns become apr_fnmatch patterns in which only * and ? are
 * wildcards; rules without a wildcard are also found by hash, so the
 * usual one-address-per-line file costs one lookup per target. */
#include "sip_consent.h"

#include <string.h>

#include "apr_file_io.h"
#include "apr_fnmatch.h"
#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_tables.h"

#include "sip_message.h"

#define CONSENT_MAX_FILE (4 * 1024 * 1024)
#define CONSENT_MAX_LINE 4096

/* An address-of-record pattern: scheme as written (RFC 3261 §19.1.4: sip
 * and sips never match each other), user and host as fnmatch patterns. */
typedef struct {
    const char *scheme;
    const char *user;
    const char *host;
    const char *literal;        /* "scheme:user@host" when neither has a wildcard */
} consent_pat_t;

typedef struct {
    int any;                    /* no invoker tokens, or * */
    apr_array_header_t *names;  /* const char *: user names */
    apr_array_header_t *aors;   /* consent_pat_t */
} consent_rule_t;

struct sip_consent {
    apr_hash_t *exact;          /* literal target -> apr_array_header_t of consent_rule_t * */
    apr_array_header_t *wild;   /* consent_pat_t target + consent_rule_t *, in pairs */
};

typedef struct {
    consent_pat_t target;
    consent_rule_t *rule;
} consent_wild_t;

/* One literal byte in an fnmatch pattern. */
static void consent_lit(char **o, char c)
{
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
        *(*o)++ = '\\';
    *(*o)++ = c;
}

/* 'sip:user@host' with * and ? wildcards into 'pat'; NULL or a reason.
 * The user is %-decoded as libosip2 decodes a target's (sip_uri_aor). */
static const char *consent_pattern(apr_pool_t *p, const char *s, consent_pat_t *pat)
{
    const char *colon = strchr(s, ':'), *at, *c;
    char *user, *host, *o;
    int wild = 0;

    if (!colon || !((colon - s == 3 && !strncasecmp(s, "sip", 3))
                    || (colon - s == 4 && !strncasecmp(s, "sips", 4))))
        return "not a sip: or sips: address";
    at = strchr(colon + 1, '@');
    if (!at || at == colon + 1)
        return "no user part (user@host)";
    if (!at[1])
        return "no host";
    pat->scheme = colon - s == 3 ? "sip" : "sips";
    o = user = apr_palloc(p, (apr_size_t)(at - colon) * 2 + 1);
    for (c = colon + 1; c < at; c++) {
        if (*c == ':' || *c == '<' || *c == '>' || *c == '"')
            return "bad character in the user part";
        if (*c == '%') {
            if (!apr_isxdigit(c[1]) || !apr_isxdigit(c[2]))
                return "bad %-escape in the user part";
            consent_lit(&o, (char)strtol(apr_pstrndup(p, c + 1, 2), NULL, 16));
            c += 2;
            continue;
        }
        wild |= *c == '*' || *c == '?';
        if (*c == '*' || *c == '?')
            *o++ = *c;
        else
            consent_lit(&o, *c);
    }
    *o = '\0';
    o = host = apr_palloc(p, strlen(at + 1) * 2 + 1);
    for (c = at + 1; *c; c++) {
        if (!apr_isalnum(*c) && !strchr(".-*?[]:", *c))
            return "bad character in the host (no port or parameters)";
        if (*c == ':' && !strchr(at + 1, '['))
            return "a port is not part of an address-of-record";
        wild |= *c == '*' || *c == '?';
        if (*c == '*' || *c == '?')
            *o++ = *c;
        else
            consent_lit(&o, (char)apr_tolower(*c));
    }
    *o = '\0';
    pat->user = user;
    pat->host = host;
    pat->literal = wild ? NULL : sip_uri_aor(p, s);
    if (!wild && !pat->literal)
        return "not a valid SIP address";
    return NULL;
}

/* 'aor' (from sip_uri_aor: host lower-cased) against a pattern. */
static int consent_match(apr_pool_t *p, const consent_pat_t *pat, const char *aor)
{
    const char *colon = strchr(aor, ':'), *at;

    if (!colon || (apr_size_t)(colon - aor) != strlen(pat->scheme)
        || strncmp(aor, pat->scheme, (apr_size_t)(colon - aor)))
        return 0;
    if (pat->literal)
        return !strcmp(pat->literal, aor);
    at = strrchr(colon + 1, '@');
    if (!at)
        return 0;
    return apr_fnmatch(pat->user, apr_pstrmemdup(p, colon + 1, (apr_size_t)(at - colon - 1)),
                       0) == APR_SUCCESS
           && apr_fnmatch(pat->host, at + 1, 0) == APR_SUCCESS;
}

sip_consent_t *sip_consent_parse(apr_pool_t *p, const char *name, const char *text,
                                 const char **why)
{
    sip_consent_t *c = apr_pcalloc(p, sizeof(*c));
    const char *line = text;
    int lineno = 0;

    *why = NULL;
    if (strlen(text) > CONSENT_MAX_FILE) {
        *why = apr_psprintf(p, "%s: larger than %d bytes", name, CONSENT_MAX_FILE);
        return NULL;
    }
    c->exact = apr_hash_make(p);
    c->wild = apr_array_make(p, 4, sizeof(consent_wild_t));
    while (*line) {
        const char *end = line + strcspn(line, "\n");
        char *buf, *tok, *last, *hash;
        consent_pat_t target;
        consent_rule_t *rule;
        const char *err;

        lineno++;
        if (end - line > CONSENT_MAX_LINE) {
            *why = apr_psprintf(p, "%s:%d: line longer than %d bytes", name, lineno,
                                CONSENT_MAX_LINE);
            return NULL;
        }
        buf = apr_pstrmemdup(p, line, (apr_size_t)(end - line));
        line = *end ? end + 1 : end;
        if ((hash = strchr(buf, '#')) != NULL)
            *hash = '\0';
        tok = apr_strtok(buf, " \t\r\f\v", &last);
        if (!tok)
            continue;
        if ((err = consent_pattern(p, tok, &target)) != NULL) {
            *why = apr_psprintf(p, "%s:%d: target %s: %s", name, lineno, tok, err);
            return NULL;
        }
        rule = apr_pcalloc(p, sizeof(*rule));
        rule->names = apr_array_make(p, 1, sizeof(const char *));
        rule->aors = apr_array_make(p, 1, sizeof(consent_pat_t));
        rule->any = 1;              /* no invoker tokens: any authenticated user */
        while ((tok = apr_strtok(NULL, " \t\r\f\v", &last)) != NULL) {
            if (rule->any == 1)
                rule->any = 0;
            if (!strcmp(tok, "*"))
                rule->any = 2;
            else if (strchr(tok, ':')) {
                consent_pat_t *inv = apr_array_push(rule->aors);
                if ((err = consent_pattern(p, tok, inv)) != NULL) {
                    *why = apr_psprintf(p, "%s:%d: invoker %s: %s", name, lineno, tok, err);
                    return NULL;
                }
            }
            else
                APR_ARRAY_PUSH(rule->names, const char *) = tok;
        }
        if (target.literal) {
            apr_array_header_t *rules = apr_hash_get(c->exact, target.literal,
                                                     APR_HASH_KEY_STRING);
            if (!rules) {
                rules = apr_array_make(p, 1, sizeof(consent_rule_t *));
                apr_hash_set(c->exact, target.literal, APR_HASH_KEY_STRING, rules);
            }
            APR_ARRAY_PUSH(rules, consent_rule_t *) = rule;
        }
        else {
            consent_wild_t *w = apr_array_push(c->wild);
            w->target = target;
            w->rule = rule;
        }
    }
    return c;
}

sip_consent_t *sip_consent_load(apr_pool_t *p, const char *path, const char **why)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t n;
    char *text;
    apr_status_t rv;

    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv != APR_SUCCESS) {
        char err[120];
        *why = apr_psprintf(p, "%s:0: cannot open: %s", path,
                            apr_strerror(rv, err, sizeof(err)));
        return NULL;
    }
    rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    if (rv != APR_SUCCESS || fi.size > CONSENT_MAX_FILE) {
        apr_file_close(f);
        *why = apr_psprintf(p, "%s:0: %s", path, rv != APR_SUCCESS ? "cannot stat"
                            : "larger than 4 MB");
        return NULL;
    }
    n = (apr_size_t)fi.size;
    text = apr_palloc(p, n + 1);
    rv = n ? apr_file_read_full(f, text, n, &n) : APR_SUCCESS;
    apr_file_close(f);
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(p, "%s:0: cannot read", path);
        return NULL;
    }
    text[n] = '\0';
    if (memchr(text, '\0', n)) {
        *why = apr_psprintf(p, "%s:0: contains a NUL byte", path);
        return NULL;
    }
    return sip_consent_parse(p, path, text, why);
}

static int consent_rule_allows(apr_pool_t *p, const consent_rule_t *r, const char *user,
                               const char *aor)
{
    int i;

    if (r->any)
        return 1;
    for (i = 0; i < r->names->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(r->names, i, const char *), user))
            return 1;
    for (i = 0; aor && i < r->aors->nelts; i++)
        if (consent_match(p, &APR_ARRAY_IDX(r->aors, i, consent_pat_t), aor))
            return 1;
    return 0;
}

int sip_consent_allows(const sip_consent_t *c, apr_pool_t *p, const char *target,
                       const char *user, const char *aor)
{
    const apr_array_header_t *rules;
    const char *t;
    int i;

    if (!c || !user || !target || !(t = sip_uri_aor(p, target)))
        return 0;
    aor = aor ? sip_uri_aor(p, aor) : NULL;
    rules = apr_hash_get(c->exact, t, APR_HASH_KEY_STRING);
    for (i = 0; rules && i < rules->nelts; i++)
        if (consent_rule_allows(p, APR_ARRAY_IDX(rules, i, consent_rule_t *), user, aor))
            return 1;
    for (i = 0; i < c->wild->nelts; i++) {
        const consent_wild_t *w = &APR_ARRAY_IDX(c->wild, i, consent_wild_t);
        if (consent_match(p, &w->target, t) && consent_rule_allows(p, w->rule, user, aor))
            return 1;
    }
    return 0;
}
