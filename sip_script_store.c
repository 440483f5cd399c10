#include "sip_script_store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "apr_file_io.h"
#include "apr_sha1.h"
#include "apr_strings.h"
#include "httpd.h"
#include "http_log.h"

static const char *store_dir;   /* NULL: no file store */

/* One file per script: a few "name: value" lines, a blank line, the body.
 * The length line lets a reader tell a whole file from a damaged one. */
#define SCRIPT_MAGIC "SIPSCRIPT 1\n"

apr_time_t sip_script_mtime(apr_time_t now)
{
    return apr_time_from_sec(apr_time_sec(now));
}

apr_status_t sip_script_store_prepare(apr_pool_t *p, const char *dir, long uid, long gid)
{
    apr_status_t rv = apr_dir_make_recursive(dir, APR_FPROT_UREAD | APR_FPROT_UWRITE
                                             | APR_FPROT_UEXECUTE, p);

    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv))
        return rv;
    /* the engine, no longer root, writes here; nobody else may read */
    if (uid != -1 && chown(dir, (uid_t)uid, (gid_t)gid) != 0)
        return errno;
    if (chmod(dir, 0700) != 0)
        return errno;
    return APR_SUCCESS;
}

void sip_script_store_open(const char *dir)
{
    store_dir = dir;
}

const char *sip_script_aor_hash(apr_pool_t *p, const char *aor)
{
    unsigned char d[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t c;
    char hex[2 * APR_SHA1_DIGESTSIZE + 1];
    int i;

    apr_sha1_init(&c);
    apr_sha1_update(&c, aor, (unsigned int)strlen(aor));
    apr_sha1_final(d, &c);
    for (i = 0; i < APR_SHA1_DIGESTSIZE; i++)
        apr_snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return apr_pstrdup(p, hex);
}

/* The directory of an AoR: a hash, so no AoR text ever becomes a path. */
static const char *aor_dir(apr_pool_t *p, const char *aor)
{
    return apr_pstrcat(p, store_dir, "/", sip_script_aor_hash(p, aor), NULL);
}

/* Only the types we store reach a file name. */
static int type_ok(const char *type)
{
    return type && (!strcmp(type, SIP_SCRIPT_SIP_CGI) || !strcmp(type, SIP_SCRIPT_CPL));
}

static const char *field(char **cur, const char *name)
{
    char *line = *cur, *nl = strchr(line, '\n');
    apr_size_t n = strlen(name);

    if (!nl || strncmp(line, name, n) || line[n] != ':' || line[n + 1] != ' ')
        return NULL;
    *nl = '\0';
    *cur = nl + 1;
    return line + n + 2;
}

static apr_status_t read_script(apr_pool_t *p, const char *path, const char *aor,
                                const char *type, sip_script_t **out)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t got;
    apr_status_t rv;
    char *buf, *cur;
    const char *a, *t, *ct, *mt, *ln;
    sip_script_t *s;

    *out = NULL;
    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (APR_STATUS_IS_ENOENT(rv))
        return APR_SUCCESS;
    if (rv != APR_SUCCESS)
        return rv;
    rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    if (rv == APR_SUCCESS) {
        buf = apr_palloc(p, (apr_size_t)fi.size + 1);
        rv = apr_file_read_full(f, buf, (apr_size_t)fi.size, &got);
        buf[got] = '\0';
    }
    apr_file_close(f);
    if (rv != APR_SUCCESS)
        return rv;
    cur = buf;
    if (strncmp(cur, SCRIPT_MAGIC, sizeof(SCRIPT_MAGIC) - 1))
        return APR_EGENERAL;
    cur += sizeof(SCRIPT_MAGIC) - 1;
    a = field(&cur, "aor");
    t = field(&cur, "type");
    ct = field(&cur, "content-type");
    mt = field(&cur, "mtime");
    ln = field(&cur, "length");
    if (!a || !t || !ct || !mt || !ln || *cur != '\n' || strcmp(a, aor) || strcmp(t, type))
        return APR_EGENERAL;
    cur++;
    s = apr_pcalloc(p, sizeof(*s));
    s->aor = a;
    s->type = t;
    s->content_type = ct;
    s->mtime = apr_time_from_sec(apr_atoi64(mt));
    s->len = (apr_size_t)apr_atoi64(ln);
    if (s->len != got - (apr_size_t)(cur - buf))
        return APR_EGENERAL;    /* cut short: never the case after a rename */
    s->body = cur;
    *out = s;
    return APR_SUCCESS;
}

apr_status_t sip_script_store_get(apr_pool_t *p, const char *aor, const char *type,
                                  sip_script_t **out)
{
    apr_status_t rv;

    *out = NULL;
    if (!store_dir || !type_ok(type))
        return APR_SUCCESS;
    rv = read_script(p, apr_pstrcat(p, aor_dir(p, aor), "/", type, NULL), aor, type, out);
    if (rv != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, NULL,
                     "sip script store: cannot read the %s script of %s", type, aor);
    return rv;
}

apr_status_t sip_script_store_list(apr_pool_t *p, const char *aor, apr_array_header_t **out)
{
    static const char *const types[] = {SIP_SCRIPT_CPL, SIP_SCRIPT_SIP_CGI, NULL};
    int i;

    *out = apr_array_make(p, 2, sizeof(sip_script_t *));
    for (i = 0; types[i]; i++) {
        sip_script_t *s;
        apr_status_t rv = sip_script_store_get(p, aor, types[i], &s);
        if (rv != APR_SUCCESS)
            return rv;
        if (s)
            *(sip_script_t **)apr_array_push(*out) = s;
    }
    return APR_SUCCESS;
}

int sip_script_check(const apr_array_header_t *stored, const apr_array_header_t *ops,
                     apr_time_t if_unmodified_since, apr_size_t max_total)
{
    apr_size_t total = 0;
    int i, j;

    /* the user's total after the change (checked first: §3.3 lets only a
     * request that would otherwise succeed end in 412) */
    for (j = 0; stored && j < stored->nelts; j++) {
        const sip_script_t *s = APR_ARRAY_IDX(stored, j, sip_script_t *);
        int replaced = 0;
        for (i = 0; ops && i < ops->nelts; i++)
            replaced |= !strcmp(APR_ARRAY_IDX(ops, i, sip_script_op_t).type, s->type);
        if (!replaced)
            total += s->len;
    }
    for (i = 0; ops && i < ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(ops, i, sip_script_op_t);
        if (!op->remove)
            total += op->len;
    }
    if (max_total && total > max_total)
        return 413;
    for (i = 0; ops && i < ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(ops, i, sip_script_op_t);
        for (j = 0; if_unmodified_since && stored && j < stored->nelts; j++) {
            const sip_script_t *s = APR_ARRAY_IDX(stored, j, sip_script_t *);
            if (!strcmp(s->type, op->type) && s->mtime > if_unmodified_since)
                return 412;
        }
    }
    return 0;
}

apr_time_t sip_script_next_mtime(const apr_array_header_t *stored, const apr_array_header_t *ops,
                                 apr_time_t now)
{
    apr_time_t t = sip_script_mtime(now);
    int i, j;

    /* two changes within one second must not share a date, or a client
     * that fetched between them passes If-Unmodified-Since (§3.3) */
    for (i = 0; ops && i < ops->nelts; i++)
        for (j = 0; stored && j < stored->nelts; j++) {
            const sip_script_t *s = APR_ARRAY_IDX(stored, j, sip_script_t *);
            if (!strcmp(s->type, APR_ARRAY_IDX(ops, i, sip_script_op_t).type)
                && s->mtime >= t)
                t = s->mtime + apr_time_from_sec(1);
        }
    return t;
}

static apr_status_t write_temp(apr_pool_t *p, const char *tmp, const char *aor,
                               const sip_script_op_t *op, apr_time_t mtime)
{
    apr_file_t *f;
    apr_size_t n;
    apr_status_t rv;
    const char *head = apr_psprintf(p, SCRIPT_MAGIC "aor: %s\ntype: %s\ncontent-type: %s\n"
                                    "mtime: %" APR_TIME_T_FMT "\nlength: %" APR_SIZE_T_FMT
                                    "\n\n", aor, op->type, op->content_type,
                                    apr_time_sec(mtime), op->len);

    rv = apr_file_open(&f, tmp, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE
                       | APR_FOPEN_BINARY, APR_FPROT_UREAD | APR_FPROT_UWRITE, p);
    if (rv != APR_SUCCESS)
        return rv;
    rv = apr_file_write_full(f, head, strlen(head), &n);
    if (rv == APR_SUCCESS && op->len)
        rv = apr_file_write_full(f, op->body, op->len, &n);
    if (rv == APR_SUCCESS)
        rv = apr_file_sync(f);  /* on disk before the rename makes it the script */
    apr_file_close(f);
    if (rv != APR_SUCCESS)
        apr_file_remove(tmp, p);
    return rv;
}

int sip_script_store_apply(apr_pool_t *p, const char *aor, const apr_array_header_t *ops,
                           apr_time_t now)
{
    const char *dir, **tmps;
    apr_time_t mtime = sip_script_mtime(now);
    apr_status_t rv;
    int i;

    if (!ops || !ops->nelts)
        return 0;
    if (!store_dir)
        return 500;
    dir = aor_dir(p, aor);
    rv = apr_dir_make(dir, APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_UEXECUTE, p);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, NULL, "sip script store: cannot make %s", dir);
        return 500;
    }
    tmps = apr_pcalloc(p, sizeof(char *) * (apr_size_t)ops->nelts);
    for (i = 0; i < ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(ops, i, sip_script_op_t);
        rv = APR_SUCCESS;   /* not the EEXIST of the directory, for a remove */
        if (!type_ok(op->type))
            rv = APR_EINVAL;
        else if (!op->remove) {
            tmps[i] = apr_psprintf(p, "%s/.%s.%ld.tmp", dir, op->type, (long)getpid());
            rv = write_temp(p, tmps[i], aor, op, mtime);
        }
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, NULL,
                         "sip script store: cannot write the %s script of %s", op->type, aor);
            while (i-- > 0)
                if (tmps[i])
                    apr_file_remove(tmps[i], p);
            return 500;
        }
    }
    for (i = 0; i < ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(ops, i, sip_script_op_t);
        const char *path = apr_pstrcat(p, dir, "/", op->type, NULL);
        rv = op->remove ? apr_file_remove(path, p) : apr_file_rename(tmps[i], path, p);
        if (rv != APR_SUCCESS && !(op->remove && APR_STATUS_IS_ENOENT(rv)))
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, NULL, "sip script store: cannot %s %s",
                         op->remove ? "remove" : "rename into place", path);
    }
    return 0;
}

/* ---- the database store (SipLocation dbd): the table sip_scripts ----
 * Run by the location store's database thread, inside the transaction of
 * the REGISTER it belongs to.  Bodies are kept as hex text: a script may
 * hold any bytes, and TEXT works the same on PostgreSQL and SQLite. */

static int db_query(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h, const char *sql)
{
    int rows = 0, rc = apr_dbd_query(d, h, &rows, sql);

    if (rc != 0)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, NULL, "sip script store: SQL failed: %s",
                     apr_dbd_error(d, h, rc));
    (void)p;
    return rc;
}

static const char *q(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h, const char *s)
{
    return apr_pstrcat(p, "'", apr_dbd_escape(d, p, s ? s : "", h), "'", NULL);
}

int sip_script_db_schema(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h)
{
    return db_query(p, d, h, "CREATE TABLE IF NOT EXISTS sip_scripts ("
                    "aor VARCHAR(255) NOT NULL, type VARCHAR(32) NOT NULL, "
                    "content_type VARCHAR(255) NOT NULL, mtime BIGINT NOT NULL, "
                    "body_hex TEXT NOT NULL, PRIMARY KEY (aor, type))");
}

static int unhex(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int sip_script_db_list(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h, const char *aor,
                       apr_array_header_t **out)
{
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    int rc;

    *out = apr_array_make(p, 2, sizeof(sip_script_t *));
    rc = apr_dbd_select(d, p, h, &res, apr_pstrcat(p, "SELECT type, content_type, mtime, "
                        "body_hex FROM sip_scripts WHERE aor = ", q(p, d, h, aor),
                        " ORDER BY type DESC", NULL), 1);   /* 0 sleeps 100 ms on pgsql
                                                                 when there is no row */
    if (rc != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, NULL, "sip script store: SQL failed: %s",
                     apr_dbd_error(d, h, rc));
        return 500;
    }
    while (apr_dbd_get_row(d, p, res, &row, -1) == 0) {
        const char *hex = apr_dbd_get_entry(d, row, 3);
        apr_size_t n = hex ? strlen(hex) / 2 : 0, i;
        char *body = apr_palloc(p, n + 1);
        sip_script_t *s = apr_pcalloc(p, sizeof(*s));

        for (i = 0; i < n; i++)
            body[i] = (char)(unhex(hex[2 * i]) << 4 | unhex(hex[2 * i + 1]));
        body[n] = '\0';
        s->aor = aor;
        s->type = apr_pstrdup(p, apr_dbd_get_entry(d, row, 0));
        s->content_type = apr_pstrdup(p, apr_dbd_get_entry(d, row, 1));
        s->mtime = apr_time_from_sec(apr_atoi64(apr_dbd_get_entry(d, row, 2)));
        s->body = body;
        s->len = n;
        if (type_ok(s->type))
            *(sip_script_t **)apr_array_push(*out) = s;
    }
    return 0;
}

int sip_script_db_apply(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h, const char *aor,
                        const apr_array_header_t *ops, apr_time_t now)
{
    static const char digits[] = "0123456789abcdef";
    int i;

    for (i = 0; ops && i < ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(ops, i, sip_script_op_t);
        int rc;
        if (!type_ok(op->type))
            return 500;
        if (op->remove)
            rc = db_query(p, d, h, apr_pstrcat(p, "DELETE FROM sip_scripts WHERE aor = ",
                                               q(p, d, h, aor), " AND type = ",
                                               q(p, d, h, op->type), NULL));
        else {
            char *hex = apr_palloc(p, 2 * op->len + 1);
            apr_size_t k;
            for (k = 0; k < op->len; k++) {
                hex[2 * k] = digits[(unsigned char)op->body[k] >> 4];
                hex[2 * k + 1] = digits[(unsigned char)op->body[k] & 15];
            }
            hex[2 * op->len] = '\0';
            rc = db_query(p, d, h, apr_psprintf(p, "INSERT INTO sip_scripts (aor, type, "
                          "content_type, mtime, body_hex) VALUES (%s, %s, %s, %" APR_TIME_T_FMT
                          ", '%s') ON CONFLICT (aor, type) DO UPDATE SET content_type = "
                          "excluded.content_type, mtime = excluded.mtime, body_hex = "
                          "excluded.body_hex", q(p, d, h, aor), q(p, d, h, op->type),
                          q(p, d, h, op->content_type), apr_time_sec(sip_script_mtime(now)), hex));
        }
        if (rc != 0)
            return 500;
    }
    return 0;
}
