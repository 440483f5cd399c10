#include "sip_location.h"
#include "sip_log.h"
#include "sip_message.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apr_hash.h"
#include "apr_strings.h"
#include "apr_lib.h"


typedef struct aor_entry {
    char *aor;
    sip_binding_t **b;
    int n, cap;
} aor_entry_t;

static apr_hash_t *aors;        /* aor -> aor_entry_t (malloc'd, lives forever) */
static apr_pool_t *loc_pool;
static sip_loop_t *loc_loop;
static int journal = -1;
static apr_size_t journal_lines, live;
static sip_timer_t sweep_timer;

apr_size_t sip_location_count(void)
{
    return live;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void binding_free(sip_binding_t *b)
{
    free((char *)b->aor);
    free((char *)b->contact);
    free((char *)b->params);
    free((char *)b->call_id);
    free((char *)b->path);
    free(b);
}

static aor_entry_t *entry_for(const char *aor, int create)
{
    aor_entry_t *e = apr_hash_get(aors, aor, APR_HASH_KEY_STRING);

    if (!e && create) {
        e = calloc(1, sizeof(*e));
        e->aor = strdup(aor);
        apr_hash_set(aors, e->aor, APR_HASH_KEY_STRING, e);
    }
    return e;
}

/* ---- journal ---- */

static void journal_write(const char *line)
{
    apr_size_t len = strlen(line), off = 0;

    if (journal < 0)
        return;
    while (off < len) {
        ssize_t n = write(journal, line + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                         "sip location: cannot write the journal; registrations may be lost "
                         "on restart");
            return;
        }
        off += (apr_size_t)n;
    }
    journal_lines++;
}

static int clean(const char *s)
{
    return !s || !strpbrk(s, "\t\r\n");
}

static void journal_set(const sip_binding_t *b)
{
    char *line;

    if (!clean(b->aor) || !clean(b->contact) || !clean(b->params) || !clean(b->call_id)
        || !clean(b->path))
        return;
    line = apr_psprintf(loc_pool, "S\t%s\t%s\t%s\t%s\t%u\t%" APR_TIME_T_FMT "\t%d\t%s\n",
                        b->aor, b->contact, b->params ? b->params : "", b->call_id, b->cseq,
                        b->expires, b->q1000, b->path ? b->path : "");
    journal_write(line);
}

/* ---- the table ---- */

static void entry_remove_at(aor_entry_t *e, int i)
{
    binding_free(e->b[i]);
    e->b[i] = e->b[--e->n];
    live--;
}

static void set_binding(const sip_binding_t *nb, int log)
{
    aor_entry_t *e = entry_for(nb->aor, 1);
    sip_binding_t *b;
    int i;

    for (i = 0; i < e->n; i++)
        if (sip_uri_equal(e->b[i]->contact, nb->contact))
            break;
    if (nb->expires <= apr_time_now()) {
        if (i < e->n)
            entry_remove_at(e, i);
        if (log)
            journal_write(apr_psprintf(loc_pool, "D\t%s\t%s\n", nb->aor, nb->contact));
        return;
    }
    if (i == e->n) {
        if (e->n == e->cap) {
            e->cap = e->cap ? e->cap * 2 : 4;
            e->b = realloc(e->b, (size_t)e->cap * sizeof(*e->b));
        }
        b = calloc(1, sizeof(*b));
        e->b[e->n++] = b;
        live++;
    }
    else {
        b = e->b[i];
        free((char *)b->aor);
        free((char *)b->contact);
        free((char *)b->params);
        free((char *)b->call_id);
        free((char *)b->path);
    }
    b->aor = xstrdup(nb->aor);
    b->contact = xstrdup(nb->contact);
    b->params = xstrdup(nb->params ? nb->params : "");
    b->call_id = xstrdup(nb->call_id);
    b->cseq = nb->cseq;
    b->expires = nb->expires;
    b->q1000 = nb->q1000;
    b->path = nb->path && *nb->path ? xstrdup(nb->path) : NULL;
    if (log)
        journal_set(b);
}

void sip_location_set(const sip_binding_t *b)
{
    set_binding(b, 1);
}

void sip_location_remove(const char *aor, const char *contact)
{
    aor_entry_t *e = entry_for(aor, 0);
    int i;

    if (!e)
        return;
    for (i = 0; i < e->n; i++)
        if (sip_uri_equal(e->b[i]->contact, contact)) {
            entry_remove_at(e, i);
            journal_write(apr_psprintf(loc_pool, "D\t%s\t%s\n", aor, contact));
            return;
        }
}

void sip_location_remove_all(const char *aor)
{
    aor_entry_t *e = entry_for(aor, 0);

    if (!e)
        return;
    while (e->n)
        entry_remove_at(e, 0);
    journal_write(apr_psprintf(loc_pool, "A\t%s\n", aor));
}

static int by_q(const void *a, const void *b)
{
    const sip_binding_t *x = *(sip_binding_t *const *)a, *y = *(sip_binding_t *const *)b;
    if (x->q1000 != y->q1000)
        return y->q1000 - x->q1000;
    return x->expires < y->expires ? 1 : x->expires > y->expires ? -1 : 0;
}

apr_array_header_t *sip_location_lookup(apr_pool_t *p, const char *aor)
{
    aor_entry_t *e = entry_for(aor, 0);
    apr_array_header_t *out;
    apr_time_t now = apr_time_now();
    int i;

    if (!e)
        return NULL;
    out = apr_array_make(p, e->n ? e->n : 1, sizeof(sip_binding_t *));
    for (i = 0; i < e->n; i++) {
        sip_binding_t *c;
        if (e->b[i]->expires <= now)
            continue;   /* never report an expired binding, swept or not */
        c = apr_pmemdup(p, e->b[i], sizeof(*c));
        *(sip_binding_t **)apr_array_push(out) = c;
    }
    qsort(out->elts, (size_t)out->nelts, sizeof(sip_binding_t *), by_q);
    return out;
}

/* ---- expiry and compaction ---- */

static void compact(void)
{
    apr_hash_index_t *hi;
    apr_pool_t *p;

    if (journal < 0)
        return;
    if (ftruncate(journal, 0) < 0 || lseek(journal, 0, SEEK_SET) < 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                     "sip location: cannot rewrite the journal");
        return;
    }
    journal_lines = 0;
    apr_pool_create(&p, loc_pool);
    for (hi = apr_hash_first(p, aors); hi; hi = apr_hash_next(hi)) {
        aor_entry_t *e = apr_hash_this_val(hi);
        int i;
        if (!e->n)      /* keep the AoR known: it answers 480, not 404 */
            journal_write(apr_psprintf(p, "K\t%s\n", e->aor));
        for (i = 0; i < e->n; i++)
            journal_set(e->b[i]);
    }
    apr_pool_destroy(p);
    apr_pool_clear(loc_pool);
}

static void sweep(void *baton)
{
    apr_hash_index_t *hi;
    apr_time_t now = apr_time_now();

    (void)baton;
    for (hi = apr_hash_first(NULL, aors); hi; hi = apr_hash_next(hi)) {
        aor_entry_t *e = apr_hash_this_val(hi);
        int i = 0;
        while (i < e->n) {
            if (e->b[i]->expires <= now)
                entry_remove_at(e, i);
            else
                i++;
        }
    }
    /* The journal only grows between compactions; keep it near the table. */
    if (journal_lines > 10000 && journal_lines > 4 * live)
        compact();
    else
        apr_pool_clear(loc_pool);
    sip_timer_set(loc_loop, &sweep_timer, apr_time_from_sec(1), sweep, NULL);
}

static void replay_line(char *line)
{
    char *f[10];
    int n = 0;

    /* fields may be empty, so split on every tab */
    f[n++] = line;
    for (char *s = line; *s && n < 10; s++)
        if (*s == '\t') {
            *s = '\0';
            f[n++] = s + 1;
        }
    if (n >= 9 && strcmp(f[0], "S") == 0) {
        sip_binding_t b;
        memset(&b, 0, sizeof(b));
        b.aor = f[1];
        b.contact = f[2];
        b.params = f[3];
        b.call_id = f[4];
        b.cseq = (apr_uint32_t)strtoul(f[5], NULL, 10);
        b.expires = (apr_time_t)apr_atoi64(f[6]);
        b.q1000 = atoi(f[7]);
        b.path = *f[8] ? f[8] : NULL;
        set_binding(&b, 0);
    }
    else if (n >= 3 && strcmp(f[0], "D") == 0) {
        aor_entry_t *e = entry_for(f[1], 0);
        int i;
        for (i = 0; e && i < e->n; i++)
            if (sip_uri_equal(e->b[i]->contact, f[2])) {
                entry_remove_at(e, i);
                break;
            }
    }
    else if (n >= 2 && strcmp(f[0], "A") == 0) {
        aor_entry_t *e = entry_for(f[1], 1);
        while (e->n)
            entry_remove_at(e, 0);
    }
    else if (n >= 2 && strcmp(f[0], "K") == 0)
        entry_for(f[1], 1);
}

apr_status_t sip_location_init(sip_loop_t *loop, apr_pool_t *p, int journal_fd)
{
    loc_loop = loop;
    apr_pool_create(&loc_pool, p);
    aors = apr_hash_make(p);
    journal = journal_fd;
    if (journal >= 0) {
        FILE *f;
        char *line = NULL;
        size_t cap = 0;
        int fd2 = dup(journal);
        apr_size_t lines = 0;

        if (fd2 >= 0 && lseek(journal, 0, SEEK_SET) >= 0 && (f = fdopen(fd2, "r"))) {
            while (getline(&line, &cap, f) > 0) {
                line[strcspn(line, "\n")] = '\0';
                replay_line(line);
                lines++;
            }
            free(line);
            fclose(f);
        }
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                     "sip location: %" APR_SIZE_T_FMT " bindings restored from %" APR_SIZE_T_FMT
                     " journal lines", live, lines);
        sweep(NULL);
        compact();
    }
    sip_timer_set(loop, &sweep_timer, apr_time_from_sec(1), sweep, NULL);
    return APR_SUCCESS;
}

