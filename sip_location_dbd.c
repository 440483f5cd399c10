/* The location store in a mod_dbd database (SipLocation dbd), shared by
 * every server using it; worked by its own thread so that the engine
 * never waits for SQL.  Moved out of sip_location.c as it was. */
#include "sip_location.h"
#include "sip_location_dbd.h"
#include "sip_script_store.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_transport.h"
#include "sip_stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <postgresql/libpq-fe.h>

#include "apr_hash.h"
#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_dbd.h"
#include "apr_thread_proc.h"
#include "apr_thread_mutex.h"
#include "apr_thread_cond.h"
#include "apr_optional.h"
#include "apr_portable.h"
#include "mod_dbd.h"

static apr_array_header_t *copy_bindings(apr_pool_t *p, const apr_array_header_t *in)
{
    apr_array_header_t *out;
    int i;

    if (!in)
        return NULL;
    out = apr_array_make(p, in->nelts ? in->nelts : 1, sizeof(sip_binding_t *));
    for (i = 0; i < in->nelts; i++) {
        const sip_binding_t *b = APR_ARRAY_IDX(in, i, sip_binding_t *);
        sip_binding_t *c = apr_pmemdup(p, b, sizeof(*c));
        c->aor = apr_pstrdup(p, b->aor);
        c->contact = apr_pstrdup(p, b->contact);
        c->params = apr_pstrdup(p, b->params ? b->params : "");
        c->call_id = apr_pstrdup(p, b->call_id);
        c->path = b->path ? apr_pstrdup(p, b->path) : NULL;
        c->display = b->display ? apr_pstrdup(p, b->display) : NULL;
        c->key = b->key ? apr_pstrdup(p, b->key) : NULL;
        c->received = b->received ? apr_pstrdup(p, b->received) : NULL;
        c->instance = b->instance ? apr_pstrdup(p, b->instance) : NULL;
        *(sip_binding_t **)apr_array_push(out) = c;
    }
    return out;
}

/* Scripts made in one pool, copied to another (NULL stays NULL). */
static apr_array_header_t *copy_scripts(apr_pool_t *p, const apr_array_header_t *in)
{
    apr_array_header_t *out;
    int i;

    if (!in || !p)
        return NULL;
    out = apr_array_make(p, in->nelts ? in->nelts : 1, sizeof(sip_script_t *));
    for (i = 0; i < in->nelts; i++) {
        const sip_script_t *s = APR_ARRAY_IDX(in, i, sip_script_t *);
        sip_script_t *c = apr_pmemdup(p, s, sizeof(*s));
        c->aor = apr_pstrdup(p, s->aor);
        c->type = apr_pstrdup(p, s->type);
        c->content_type = apr_pstrdup(p, s->content_type);
        c->body = apr_pstrmemdup(p, s->body, s->len);
        *(sip_script_t **)apr_array_push(out) = c;
    }
    return out;
}

static const apr_array_header_t *copy_ops(apr_pool_t *p, const apr_array_header_t *in)
{
    apr_array_header_t *out;
    int i;

    if (!in)
        return NULL;
    out = apr_array_copy(p, in);
    for (i = 0; i < out->nelts; i++) {
        sip_script_op_t *op = &APR_ARRAY_IDX(out, i, sip_script_op_t);
        op->type = apr_pstrdup(p, op->type);
        op->content_type = op->content_type ? apr_pstrdup(p, op->content_type) : NULL;
        op->body = apr_pstrmemdup(p, op->body ? op->body : "", op->len);
    }
    return out;
}

typedef struct loc_job {
    struct loc_job *next;
    apr_pool_t *pool;           /* the job's own; the DB thread works in it */
    int fetch;                  /* 1: bindings, 2: scripts */
    const char *aor;
    sip_reg_change_t chg;
    int status;
    apr_array_header_t *result;
    apr_array_header_t *scripts;
    int dberr;                  /* the database failed (not a refusal): status 500 */
    apr_uint64_t stamp;         /* changes noted before the job's read (cache_may_fill) */
    apr_pool_t *caller_pool;
    int announce;               /* several engines: tell the others what it left */
    apr_array_header_t *answer; /* the bindings answered (the caller's pool) */
    sip_location_cb cb;
    sip_location_reg_cb reg_cb;
    sip_location_scripts_cb scripts_cb;
    void *baton;
} loc_job_t;

static apr_thread_mutex_t *dbd_lock;
static apr_thread_cond_t *dbd_cond;
static loc_job_t *dbd_todo, *dbd_todo_tail, *dbd_done;
static int dbd_wake[2] = {-1, -1};
static sip_io_t dbd_wake_io;
static int dbd_stopping;
static sip_timer_t dbd_cleanup_timer;
static server_rec *dbd_server;
static sip_loop_t *dbd_loop;
static int db_failures;         /* SQL statements that failed (the DB thread's) */

/* Tuning (SipLocationBatch, SipLocationNotify, SipLocationCacheTTL) */
static int dbd_batch_max = SIP_LOC_DEFAULT_BATCH;
static const char *dbd_channel = SIP_LOC_DEFAULT_CHANNEL;  /* NULL: no notes */
static apr_interval_time_t dbd_ttl;

/* Notes of changes made elsewhere (other nodes, other engines), shared by
 * the listening thread, the DB thread and the loop under dbd_lock. */
typedef struct note {
    struct note *next;
    char aor[1];
} note_t;
static note_t *dbd_notes;           /* AoRs changed elsewhere, not yet dropped from the cache */
static apr_uint64_t dbd_changes;    /* notes (and resyncs) so far: a job's read older than the
                                       last one may not fill the cache */
static int dbd_listening;           /* notes arrive: the cache needs no TTL */
static int dbd_flush;               /* notes may have been lost: empty the whole cache */
static char dbd_node[24];           /* this engine's name in its notes (its own are no news) */

void sip_location_use_dbd(server_rec *s)
{
    const sip_server_conf *c = sip_get_conf(s);

    dbd_server = s;
    dbd_batch_max = c->loc_batch > 0 ? c->loc_batch : SIP_LOC_DEFAULT_BATCH;
    dbd_channel = !c->loc_notify ? SIP_LOC_DEFAULT_CHANNEL : *c->loc_notify ? c->loc_notify : NULL;
    dbd_ttl = c->loc_cache_ttl_ms > 0 ? apr_time_from_msec(c->loc_cache_ttl_ms) : 0;
}

const char *sip_location_dbd_directive(const char *name, const char *arg, int *batch,
                                       const char **notify, int *ttl_ms)
{
    char *end;
    long v;
    const char *c;

    if (!strcasecmp(name, "SipLocationNotify")) {
        if (!strcasecmp(arg, "off")) {
            *notify = "";
            return NULL;
        }
        /* a plain identifier: it goes into NOTIFY/LISTEN unquoted */
        for (c = arg; *c; c++)
            if (!(apr_islower(*c) || apr_isdigit(*c) || *c == '_') || (c == arg && apr_isdigit(*c)))
                return "SipLocationNotify: a channel name of a-z, 0-9 and _, or off";
        if (c == arg || c - arg > 63)
            return "SipLocationNotify: a channel name of 1 to 63 characters, or off";
        *notify = arg;
        return NULL;
    }
    errno = 0;
    v = strtol(arg, &end, 10);
    if (!strcasecmp(name, "SipLocationBatch")) {
        if (errno || *end || v < 1 || v > 4096)
            return "SipLocationBatch: changes per transaction, 1 to 4096";
        *batch = (int)v;
        return NULL;
    }
    /* SipLocationCacheTTL: seconds, or NNNms */
    if (errno || v < 0 || v > 86400000 || (*end && strcmp(end, "ms")))
        return "SipLocationCacheTTL: seconds (or NNNms), 0 for none";
    *ttl_ms = (int)(*end ? v : v * 1000);
    return NULL;
}

int sip_location_dbd_on(void)
{
    return dbd_server != NULL;
}

static const char *esc(apr_pool_t *p, ap_dbd_t *db, const char *s)
{
    return apr_pstrcat(p, "'", apr_dbd_escape(db->driver, p, s ? s : "", db->handle), "'", NULL);
}

/* What names a row (ON CONFLICT, PRIMARY KEY). */
#define DB_KEY "(aor, contact, instance, reg_id)"

static int db_exec(apr_pool_t *p, ap_dbd_t *db, const char *sql)
{
    int rows = 0, rc = apr_dbd_query(db->driver, db->handle, &rows, sql);

    if (rc != 0) {
        db_failures++;
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server, "sip location: SQL failed: %s (%s)",
                     apr_dbd_error(db->driver, db->handle, rc), sql);
    }
    (void)p;
    return rc;
}

/* Bindings of the AoRs 'where' names ("aor = 'x'", "aor IN (...)") as
 * stored: aor -> sip_binding_t * array, best q first, for each AoR known
 * (registered once: it has its marker row); NULL on an SQL error. */
static apr_hash_t *db_select_where_pre(apr_pool_t *p, ap_dbd_t *db, const char *pre,
                                       const char *where)
{
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    apr_hash_t *out = apr_hash_make(p);
    apr_hash_index_t *hi;
    apr_time_t now = apr_time_now();
    int rc;
    const char *sql = apr_pstrcat(p, pre ? pre : "", "SELECT contact, params, call_id, cseq, "
                                  "expires, q, path, "
                                  "display, transport, received, instance, reg_id, aor "
                                  "FROM sip_location WHERE ", where, NULL);

    /* random access (1): the whole answer at once; apr_dbd_pgsql's
     * sequential reading sleeps 100 ms on an empty result (a new AoR) */
    rc = apr_dbd_select(db->driver, p, db->handle, &res, sql, 1);
    if (rc != 0) {
        db_failures++;
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server, "sip location: SQL failed: %s",
                     apr_dbd_error(db->driver, db->handle, rc));
        return NULL;
    }
    while (apr_dbd_get_row(db->driver, p, res, &row, -1) == 0) {
        const char *contact = apr_dbd_get_entry(db->driver, row, 0);
        const char *path = apr_dbd_get_entry(db->driver, row, 6);
        const char *display = apr_dbd_get_entry(db->driver, row, 7);
        const char *transport = apr_dbd_get_entry(db->driver, row, 8);
        const char *received = apr_dbd_get_entry(db->driver, row, 9);
        const char *instance = apr_dbd_get_entry(db->driver, row, 10);
        const char *reg_id = apr_dbd_get_entry(db->driver, row, 11);
        const char *aor = apr_dbd_get_entry(db->driver, row, 12);
        apr_array_header_t *bs;
        sip_binding_t *b;
        if (!aor)
            continue;
        if (!(bs = apr_hash_get(out, aor, APR_HASH_KEY_STRING))) {
            aor = apr_pstrdup(p, aor);
            bs = apr_array_make(p, 4, sizeof(sip_binding_t *));
            apr_hash_set(out, aor, APR_HASH_KEY_STRING, bs);
        }
        if (!contact || !*contact)
            continue;   /* the marker row that makes the AoR "known" */
        b = apr_pcalloc(p, sizeof(*b));
        b->aor = apr_pstrdup(p, aor);
        b->contact = apr_pstrdup(p, contact);
        b->params = apr_pstrdup(p, apr_dbd_get_entry(db->driver, row, 1));
        b->call_id = apr_pstrdup(p, apr_dbd_get_entry(db->driver, row, 2));
        b->cseq = (apr_uint32_t)apr_atoi64(apr_dbd_get_entry(db->driver, row, 3));
        b->expires = (apr_time_t)apr_atoi64(apr_dbd_get_entry(db->driver, row, 4));
        b->q1000 = atoi(apr_dbd_get_entry(db->driver, row, 5));
        b->path = path && *path ? apr_pstrdup(p, path) : NULL;
        b->display = display && *display ? apr_pstrdup(p, display) : NULL;
        b->transport = transport && sip_tp_from_name(transport) > 0 ? sip_tp_from_name(transport)
                                                                    : SIP_TP_UDP;
        b->received = received && *received ? apr_pstrdup(p, received) : NULL;
        b->instance = instance && *instance ? apr_pstrdup(p, instance) : NULL;
        b->reg_id = b->instance && reg_id ? atoi(reg_id) : 0;
        if (b->expires > now)
            *(sip_binding_t **)apr_array_push(bs) = b;
    }
    for (hi = apr_hash_first(p, out); hi; hi = apr_hash_next(hi)) {
        apr_array_header_t *bs = apr_hash_this_val(hi);
        qsort(bs->elts, (size_t)bs->nelts, sizeof(sip_binding_t *), sip_location_by_q);
    }
    return out;
}

static apr_hash_t *db_select_where(apr_pool_t *p, ap_dbd_t *db, const char *where)
{
    return db_select_where_pre(p, db, NULL, where);
}

/* Bindings of an AoR as stored; NULL when it was never registered. */
static apr_array_header_t *db_select(apr_pool_t *p, ap_dbd_t *db, const char *aor, int *err)
{
    apr_hash_t *h = db_select_where(p, db, apr_pstrcat(p, "aor = ", esc(p, db, aor), NULL));

    *err = h == NULL;
    return h ? apr_hash_get(h, aor, APR_HASH_KEY_STRING) : NULL;
}

/* The columns of sip_location, each with its type, as created today. */
#define DB_COLUMNS "aor VARCHAR(255) NOT NULL, contact VARCHAR(1024) NOT NULL, " \
    "params VARCHAR(1024) NOT NULL DEFAULT '', call_id VARCHAR(255) NOT NULL, " \
    "cseq BIGINT NOT NULL, expires BIGINT NOT NULL, q INTEGER NOT NULL, " \
    "path VARCHAR(2048), display VARCHAR(1024) NOT NULL DEFAULT '', " \
    "transport VARCHAR(8) NOT NULL DEFAULT '', received VARCHAR(64) NOT NULL DEFAULT '', " \
    "instance VARCHAR(255) NOT NULL DEFAULT '', reg_id INTEGER NOT NULL DEFAULT 0"

static int db_has_column(apr_pool_t *p, ap_dbd_t *db, const char *col)
{
    int rows = 0;

    return apr_dbd_query(db->driver, db->handle, &rows,
                         apr_pstrcat(p, "SELECT ", col, " FROM sip_location WHERE 1 = 0",
                                     NULL)) == 0;
}

/* Create the table, or bring an older one up to date; 1 when done.
 * RFC-neutral schema: one row per binding, plus a marker row (empty
 * contact) per known AoR; works on SQLite and PostgreSQL.  A binding is
 * named by (aor, contact, instance, reg_id): two flows of one instance
 * (RFC 5626 §6) may register the same Contact URI. */
static int db_schema(apr_pool_t *p, ap_dbd_t *db)
{
    int ok = db_exec(p, db, "CREATE TABLE IF NOT EXISTS sip_location (" DB_COLUMNS ", "
                     "PRIMARY KEY " DB_KEY ")") == 0;

    /* columns added over time (each check fails harmlessly; not logged) */
    if (!db_has_column(p, db, "display"))
        db_exec(p, db, "ALTER TABLE sip_location ADD COLUMN "
                "display VARCHAR(1024) NOT NULL DEFAULT ''");
    if (!db_has_column(p, db, "transport"))
        db_exec(p, db, "ALTER TABLE sip_location ADD COLUMN "
                "transport VARCHAR(8) NOT NULL DEFAULT ''");
    if (!db_has_column(p, db, "instance")) {
        /* issue 17: the primary key changes, which neither SQLite nor
         * every PostgreSQL allows in place: copy into a new table */
        apr_dbd_transaction_t *tx = NULL;
        apr_dbd_transaction_start(db->driver, p, db->handle, &tx);
        if (db_exec(p, db, "ALTER TABLE sip_location RENAME TO sip_location_v2") == 0
            && db_exec(p, db, "CREATE TABLE sip_location (" DB_COLUMNS ", "
                       "PRIMARY KEY " DB_KEY ")") == 0
            && db_exec(p, db, "INSERT INTO sip_location (aor, contact, params, call_id, cseq, "
                       "expires, q, path, display, transport) SELECT aor, contact, params, "
                       "call_id, cseq, expires, q, path, display, transport "
                       "FROM sip_location_v2") == 0
            && db_exec(p, db, "DROP TABLE sip_location_v2") == 0)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, dbd_server, "sip location: table "
                         "sip_location brought to the issue 17 schema (received, instance, "
                         "reg_id)");
        else {
            apr_dbd_transaction_mode_set(db->driver, tx, APR_DBD_TRANSACTION_ROLLBACK);
            ok = 0;
        }
        apr_dbd_transaction_end(db->driver, p, tx);
    }
    db_exec(p, db, "CREATE INDEX IF NOT EXISTS sip_location_expires ON sip_location (expires)");
    sip_script_db_schema(p, db->driver, db->handle);
    return ok;
}

/* ---- notes of changes (PostgreSQL LISTEN/NOTIFY) ---- */

static int is_pgsql(ap_dbd_t *db)
{
    return strcmp(apr_dbd_name(db->driver), "pgsql") == 0;
}

static int notify_on(ap_dbd_t *db)
{
    return dbd_channel && is_pgsql(db);
}

/* In the writing transaction: PostgreSQL sends it at the commit, and never
 * for a change rolled back; equal notes of one transaction go once. */
static void db_notify(apr_pool_t *p, ap_dbd_t *db, const char *aor)
{
    db_exec(p, db, apr_pstrcat(p, "NOTIFY ", dbd_channel, ", ",
                               esc(p, db, apr_pstrcat(p, dbd_node, " ", aor, NULL)), NULL));
}

/* A note's payload, "node aor[\naor...]": the AoRs when another engine
 * wrote it, NULL for our own (the cache already holds what we wrote) or
 * garbage. */
static const char *note_foreign_aor(const char *payload, const char *self)
{
    const char *sp = payload ? strchr(payload, ' ') : NULL;

    if (!sp || !sp[1])
        return NULL;
    if ((size_t)(sp - payload) == strlen(self) && !strncmp(payload, self, strlen(self)))
        return NULL;
    return sp + 1;
}

/* The statements that write one checked change ('cur': its AoR before). */
static void db_change_sql(apr_pool_t *p, ap_dbd_t *db, const sip_reg_change_t *chg,
                          const apr_array_header_t *cur, apr_array_header_t *out)
{
    apr_hash_t *spelling;
    int i;

#define STMT(s) (*(const char **)apr_array_push(out) = (s))
    if (!chg->star && chg->bindings->nelts)     /* known from now on: 480, not 404 */
        STMT(apr_pstrcat(p, "INSERT INTO sip_location (aor, contact, params, call_id, "
                         "cseq, expires, q, path) VALUES (", esc(p, db, chg->aor),
                         ", '', '', '', 0, 0, 0, '') ON CONFLICT " DB_KEY " DO NOTHING",
                         NULL));
    if (chg->star)
        STMT(apr_pstrcat(p, "DELETE FROM sip_location WHERE aor = ",
                         esc(p, db, chg->aor), " AND contact <> ''", NULL));
    /* the row of an equal URI keeps its spelling as the key */
    spelling = apr_hash_make(p);
    for (i = 0; cur && i < cur->nelts; i++) {
        const sip_binding_t *old = APR_ARRAY_IDX(cur, i, sip_binding_t *);
        apr_hash_set(spelling, sip_binding_identity(p, old), APR_HASH_KEY_STRING, old->contact);
    }
    for (i = 0; !chg->star && i < chg->bindings->nelts; i++) {
        sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *key = apr_hash_get(spelling, sip_binding_identity(p, b), APR_HASH_KEY_STRING);
        const char *inst = b->instance ? b->instance : "";
        int rid = b->instance ? b->reg_id : 0;
        /* RFC 5626 §6: an instance's binding keeps its name when its
         * Contact changes: the row of the old Contact goes */
        if (!key || (b->instance && !sip_uri_equal(key, b->contact)))
            key = b->contact;
        if (b->instance)
            STMT(apr_psprintf(p, "DELETE FROM sip_location WHERE aor = %s AND instance "
                              "= %s AND reg_id = %d AND contact <> %s",
                              esc(p, db, chg->aor), esc(p, db, inst), rid,
                              esc(p, db, key)));
        if (b->expires <= apr_time_now()) {
            STMT(apr_psprintf(p, "DELETE FROM sip_location WHERE aor = %s AND contact "
                              "= %s AND instance = %s AND reg_id = %d",
                              esc(p, db, chg->aor), esc(p, db, key),
                              esc(p, db, inst), rid));
            continue;
        }
        STMT(apr_psprintf(p, "INSERT INTO sip_location (aor, contact, params, call_id, "
                          "cseq, expires, q, path, display, transport, received, "
                          "instance, reg_id) VALUES (%s, %s, %s, %s, %u, "
                          "%" APR_TIME_T_FMT ", %d, %s, %s, %s, %s, %s, %d) ON CONFLICT "
                          DB_KEY " DO UPDATE "
                          "SET params = excluded.params, call_id = excluded.call_id, "
                          "cseq = excluded.cseq, expires = excluded.expires, "
                          "q = excluded.q, path = excluded.path, "
                          "display = excluded.display, transport = excluded.transport, "
                          "received = excluded.received",
                          esc(p, db, chg->aor), esc(p, db, key),
                          esc(p, db, b->params), esc(p, db, b->call_id), b->cseq,
                          b->expires, b->q1000, esc(p, db, b->path),
                          esc(p, db, b->display),
                          esc(p, db, b->transport != SIP_TP_UDP
                                     ? sip_tp_param(b->transport) : ""),
                          esc(p, db, b->received), esc(p, db, inst), rid));
    }
#undef STMT
}

/* A transaction.  On PostgreSQL BEGIN, COMMIT and ROLLBACK are sent as
 * plain statements: apr_dbd_pgsql's transaction_start dereferences NULL
 * when BEGIN fails (a connection the server has closed), and failures are
 * counted here anyway (db_failures, dberr).  SQLite keeps apr_dbd's. */
typedef struct db_tx {
    apr_dbd_transaction_t *tx;
    int plain;
} db_tx_t;

static int db_tx_start(apr_pool_t *p, ap_dbd_t *db, db_tx_t *t)
{
    t->tx = NULL;
    t->plain = is_pgsql(db);
    if (t->plain)
        return db_exec(p, db, "BEGIN");
    return apr_dbd_transaction_start(db->driver, p, db->handle, &t->tx) || !t->tx;
}

static int db_tx_end(apr_pool_t *p, ap_dbd_t *db, db_tx_t *t, int rollback)
{
    if (t->plain)
        return db_exec(p, db, rollback ? "ROLLBACK" : "COMMIT");
    if (rollback)
        apr_dbd_transaction_mode_set(db->driver, t->tx, APR_DBD_TRANSACTION_ROLLBACK);
    return apr_dbd_transaction_end(db->driver, p, t->tx);
}

/* One job.  A register runs in a transaction of its own, or, 'in_batch',
 * in the batch's (db_run_batch), where nothing of a refused REGISTER is
 * written either: every refusal comes before the first write. */
static void db_run_job(ap_dbd_t *db, loc_job_t *j, int in_batch)
{
    apr_pool_t *p = j->pool;
    db_tx_t tx;
    int in_tx = 0;
    apr_array_header_t *cur;
    apr_array_header_t *writes;
    long added;
    int err, i;

    if (j->fetch == 2) {
        j->status = sip_script_db_list(p, db->driver, db->handle, j->aor, &j->scripts);
        j->dberr = j->status != 0;
        return;
    }
    if (j->fetch) {
        j->result = db_select(p, db, j->aor, &err);
        j->status = j->dberr = err ? 500 : 0;  /* not "never registered" (404) */
        return;
    }
    /* read, check, write and read again in one transaction, so that two
     * nodes registering the same AoR at once do not mix their changes */
    if (!in_batch) {
        if (db_tx_start(p, db, &tx) != 0) {
            j->status = j->dberr = 500;
            return;
        }
        in_tx = 1;
    }
    cur = db_select(p, db, j->chg.aor, &err);
    if (err) {
        j->status = j->dberr = 500;
        goto done;
    }
    j->status = sip_location_reg_check(p, cur, &j->chg, &added);
    if (j->status) {
        j->result = cur;
        goto done;
    }
    if (j->chg.script_ops && j->chg.script_ops->nelts) {
        /* draft-lennox-sip-reg-payload §4.1: the scripts first; if they
         * fail, the bindings are not touched either */
        apr_array_header_t *stored;
        j->status = j->dberr = sip_script_db_list(p, db->driver, db->handle, j->chg.aor,
                                                  &stored);
        if (!j->status)
            j->status = sip_script_check(stored, j->chg.script_ops, j->chg.if_unmodified_since,
                                         j->chg.max_script_total);
        if (!j->status)
            j->status = j->dberr = sip_script_db_apply(p, db->driver, db->handle, j->chg.aor,
                                                       j->chg.script_ops,
                                                       sip_script_next_mtime(stored,
                                                                             j->chg.script_ops,
                                                                             apr_time_now()));
        if (j->status) {
            j->result = cur;
            goto done;
        }
    }
    writes = apr_array_make(p, 8, sizeof(const char *));
    db_change_sql(p, db, &j->chg, cur, writes);
    for (i = 0; i < writes->nelts; i++)
        db_exec(p, db, APR_ARRAY_IDX(writes, i, const char *));
    j->result = db_select(p, db, j->chg.aor, &err);
    if (err)
        j->status = j->dberr = 500;
    if (!j->status && j->chg.want_scripts)
        j->status = j->dberr = sip_script_db_list(p, db->driver, db->handle, j->chg.aor,
                                                  &j->scripts);
    if (!j->status && notify_on(db))
        db_notify(p, db, j->chg.aor);
done:
    /* nothing of a refused REGISTER may stay */
    if (in_tx && db_tx_end(p, db, &tx, j->status != 0) != 0 && !j->status)
        j->status = j->dberr = 500;
}

/* Can a checked change be written as rows of the batch's one INSERT?  Only
 * when it is nothing but upserts of distinct contacts without an instance:
 * a removal, "Contact: *" or an instance's renaming must come in order. */
static int rows_only(apr_pool_t *p, const sip_reg_change_t *chg)
{
    apr_hash_t *seen = apr_hash_make(p);
    apr_time_t now = apr_time_now();
    int i;

    if (chg->star || !chg->bindings->nelts)
        return 0;
    for (i = 0; i < chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *k = sip_binding_identity(p, b);
        if (b->instance || b->expires <= now || apr_hash_get(seen, k, APR_HASH_KEY_STRING))
            return 0;
        apr_hash_set(seen, k, APR_HASH_KEY_STRING, "");
    }
    return 1;
}

/* The rows of a batch's one INSERT, column by column (the text of each
 * value): PostgreSQL gets one array per column to unnest instead of a
 * VALUES list, whose every value the parser and planner coerced and folded
 * on its own (over half the backend's time at 10 000 REGISTER/s). */
#define ROW_COLUMNS "aor, contact, params, call_id, cseq, expires, q, path, display, " \
    "transport, received, instance, reg_id"
static const char *const row_types[] = { "text", "text", "text", "text", "bigint", "bigint",
                                          "int", "text", "text", "text", "text", "text", "int" };
#define ROW_NCOLS (sizeof(row_types) / sizeof(row_types[0]))
typedef struct batch_rows {
    apr_array_header_t *col[ROW_NCOLS];
} batch_rows_t;

static void batch_rows_init(apr_pool_t *p, batch_rows_t *r, int n)
{
    apr_size_t c;

    for (c = 0; c < ROW_NCOLS; c++)
        r->col[c] = apr_array_make(p, n, sizeof(const char *));
}

static void batch_row(batch_rows_t *r, const char *const v[ROW_NCOLS])
{
    apr_size_t c;

    for (c = 0; c < ROW_NCOLS; c++)
        *(const char **)apr_array_push(r->col[c]) = v[c] ? v[c] : "";
}

/* The text of a PostgreSQL array of these strings, each element quoted
 * ("{\"a\",\"b\"}", '"' and '\' escaped), to go into an SQL literal. */
static const char *pg_array_text(apr_pool_t *p, const apr_array_header_t *a)
{
    apr_size_t len = 3;
    char *out, *o;
    int i;

    for (i = 0; i < a->nelts; i++)
        len += 2 * strlen(APR_ARRAY_IDX(a, i, const char *)) + 3;
    o = out = apr_palloc(p, len);
    *o++ = '{';
    for (i = 0; i < a->nelts; i++) {
        const char *v = APR_ARRAY_IDX(a, i, const char *);
        if (i)
            *o++ = ',';
        *o++ = '"';
        for (; *v; v++) {
            if (*v == '"' || *v == '\\')
                *o++ = '\\';
            *o++ = *v;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

/* "aor = ANY ('{...}'::text[])": the AoRs of a batch in one constant. */
static const char *aor_any(apr_pool_t *p, ap_dbd_t *db, const apr_array_header_t *aors)
{
    return apr_pstrcat(p, "aor = ANY (", esc(p, db, pg_array_text(p, aors)), "::text[])", NULL);
}

/* The rows of a change that rows_only() allows: the AoR's marker row and
 * one row per binding (the spelling of an equal URI already stored kept). */
static void change_rows(apr_pool_t *p, const sip_reg_change_t *chg,
                        const apr_array_header_t *cur, batch_rows_t *rows)
{
    apr_hash_t *spelling = apr_hash_make(p);
    const char *marker[ROW_NCOLS] = { chg->aor, "", "", "", "0", "0", "0", "", "", "", "", "", "0" };
    int i;

    batch_row(rows, marker);
    for (i = 0; cur && i < cur->nelts; i++) {
        const sip_binding_t *old = APR_ARRAY_IDX(cur, i, sip_binding_t *);
        apr_hash_set(spelling, sip_binding_identity(p, old), APR_HASH_KEY_STRING, old->contact);
    }
    for (i = 0; i < chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *key = apr_hash_get(spelling, sip_binding_identity(p, b), APR_HASH_KEY_STRING);
        const char *v[ROW_NCOLS] = {
            chg->aor, key ? key : b->contact, b->params, b->call_id,
            apr_psprintf(p, "%u", b->cseq), apr_psprintf(p, "%" APR_TIME_T_FMT, b->expires),
            apr_itoa(p, b->q1000), b->path, b->display,
            b->transport != SIP_TP_UDP ? sip_tp_param(b->transport) : "", b->received, "", "0" };
        batch_row(rows, v);
    }
}

/* The batch's one INSERT of 'rows' (upserts). */
static const char *batch_insert(apr_pool_t *p, ap_dbd_t *db, const batch_rows_t *rows)
{
    apr_array_header_t *args = apr_array_make(p, ROW_NCOLS, sizeof(const char *));
    apr_size_t c;

    for (c = 0; c < ROW_NCOLS; c++)
        *(const char **)apr_array_push(args) =
            apr_pstrcat(p, esc(p, db, pg_array_text(p, rows->col[c])), "::", row_types[c], "[]",
                        NULL);
    return apr_pstrcat(p, "INSERT INTO sip_location (" ROW_COLUMNS ") SELECT * FROM unnest(",
                       apr_array_pstrcat(p, args, ','), ") ON CONFLICT " DB_KEY " DO UPDATE "
                       "SET params = excluded.params, call_id = excluded.call_id, "
                       "cseq = excluded.cseq, expires = excluded.expires, q = excluded.q, "
                       "path = excluded.path, display = excluded.display, "
                       "transport = excluded.transport, received = excluded.received", NULL);
}

/* Notes of a batch: "node aor\naor..." payloads under PostgreSQL's 8000 bytes. */
static void batch_notes(apr_pool_t *p, ap_dbd_t *db, const apr_array_header_t *aors,
                        apr_array_header_t *writes)
{
    int i = 0;

    while (i < aors->nelts) {
        apr_size_t len = strlen(dbd_node);
        apr_array_header_t *part = apr_array_make(p, 16, sizeof(const char *));
        while (i < aors->nelts && (len + strlen(APR_ARRAY_IDX(aors, i, const char *)) + 1 < 7000
                                   || !part->nelts)) {
            len += strlen(APR_ARRAY_IDX(aors, i, const char *)) + 1;
            *(const char **)apr_array_push(part) = APR_ARRAY_IDX(aors, i++, const char *);
        }
        *(const char **)apr_array_push(writes) =
            apr_pstrcat(p, "NOTIFY ", dbd_channel, ", ",
                        esc(p, db, apr_pstrcat(p, dbd_node, " ", apr_array_pstrcat(p, part, '\n'),
                                               NULL)), NULL);
    }
}

/* What the database holds of an AoR after a change rows_only() allows
 * ('cur': its bindings before, alive and read in this transaction), as
 * db_select_where() would read it back: the rows of change_rows() replace
 * those of an equal URI (whose spelling they keep), the others stay. */
static apr_array_header_t *rows_after(apr_pool_t *p, const sip_reg_change_t *chg,
                                      const apr_array_header_t *cur)
{
    apr_array_header_t *out = apr_array_make(p, chg->bindings->nelts + (cur ? cur->nelts : 0),
                                             sizeof(sip_binding_t *));
    apr_hash_t *spelling = apr_hash_make(p);
    int i;

    for (i = 0; cur && i < cur->nelts; i++) {
        const sip_binding_t *old = APR_ARRAY_IDX(cur, i, sip_binding_t *);
        apr_hash_set(spelling, sip_binding_identity(p, old), APR_HASH_KEY_STRING, old);
    }
    for (i = 0; i < chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *id = sip_binding_identity(p, b);
        const sip_binding_t *old = apr_hash_get(spelling, id, APR_HASH_KEY_STRING);
        const char *tp = b->transport != SIP_TP_UDP ? sip_tp_param(b->transport) : "";
        sip_binding_t *r = apr_pcalloc(p, sizeof(*r));
        r->aor = apr_pstrdup(p, chg->aor);
        r->contact = apr_pstrdup(p, old ? old->contact : b->contact);
        r->params = apr_pstrdup(p, b->params ? b->params : "");
        r->call_id = apr_pstrdup(p, b->call_id);
        r->cseq = b->cseq;
        r->expires = b->expires;
        r->q1000 = b->q1000;
        r->path = b->path && *b->path ? apr_pstrdup(p, b->path) : NULL;
        r->display = b->display && *b->display ? apr_pstrdup(p, b->display) : NULL;
        r->transport = tp && *tp && sip_tp_from_name(tp) > 0 ? sip_tp_from_name(tp) : SIP_TP_UDP;
        r->received = b->received && *b->received ? apr_pstrdup(p, b->received) : NULL;
        apr_hash_set(spelling, id, APR_HASH_KEY_STRING, NULL);
        *(sip_binding_t **)apr_array_push(out) = r;
    }
    for (i = 0; cur && i < cur->nelts; i++) {
        const sip_binding_t *old = APR_ARRAY_IDX(cur, i, sip_binding_t *);
        if (apr_hash_get(spelling, sip_binding_identity(p, old), APR_HASH_KEY_STRING) == old)
            *(sip_binding_t **)apr_array_push(out) = (sip_binding_t *)old;
    }
    qsort(out->elts, (size_t)out->nelts, sizeof(sip_binding_t *), sip_location_by_q);
    return copy_bindings(p, out);
}

/* PostgreSQL: the changes of a batch that need nothing but bindings, each
 * for an AoR no earlier change of the batch touches, in as few round trips
 * as the batch allows.  The first, "BEGIN; SELECT" for all their AoRs,
 * opens the batch's transaction (the return value says it was sent).
 * Then all their writes and notes go as one multi-statement query; when
 * every change of the batch is plain upserts (rows_only) and it has
 * nothing else to run, the COMMIT ends that query (*committed) and each
 * answer is worked out from the AoR read before and the rows written
 * (rows_after), so that the batch costs two round trips.  Otherwise a
 * SELECT of what the writes left ends it, and the COMMIT follows.
 * handled[i] is set for each job it took. */
static int db_run_fast(ap_dbd_t *db, apr_pool_t *p, loc_job_t **jobs, int n, char *handled,
                       int *committed)
{
    apr_hash_t *seen = apr_hash_make(p), *before, *after;
    apr_array_header_t *in = apr_array_make(p, n, sizeof(const char *));
    apr_array_header_t *written = apr_array_make(p, n, sizeof(const char *));
    apr_array_header_t *writes = apr_array_make(p, n * 4, sizeof(const char *));
    batch_rows_t rows;
    apr_array_header_t *noted = apr_array_make(p, n, sizeof(const char *));
    int i, all = 1, plain = 1;

    *committed = 0;
    batch_rows_init(p, &rows, n * 2);
    for (i = 0; i < n; i++) {
        loc_job_t *j = jobs[i];
        int again = apr_hash_get(seen, j->chg.aor, APR_HASH_KEY_STRING) != NULL;
        apr_hash_set(seen, j->chg.aor, APR_HASH_KEY_STRING, "");
        handled[i] = !again && !j->chg.want_scripts
                     && !(j->chg.script_ops && j->chg.script_ops->nelts);
        if (handled[i])
            *(const char **)apr_array_push(in) = j->chg.aor;
        else
            all = 0;
    }
    if (!in->nelts)
        return 0;
    /* the plan must not depend on statistics: a young or fast-growing
     * table has none (autovacuum's ANALYZE comes later), and the planner
     * then takes "aor IN (many)" for a good part of the table and scans
     * all of it, each batch, longer as the table grows (11 ms a batch at
     * 180 000 rows, most of the backend's time).  SET LOCAL ends with the
     * transaction; the connection is mod_dbd's, shared. */
    before = db_select_where_pre(p, db, "BEGIN; SET LOCAL enable_seqscan = off; ",
                                 aor_any(p, db, in));
    for (i = 0; i < n; i++) {
        loc_job_t *j = jobs[i];
        apr_array_header_t *cur;
        long added;
        if (!handled[i])
            continue;
        if (!before) {
            j->status = j->dberr = 500;
            continue;
        }
        cur = apr_hash_get(before, j->chg.aor, APR_HASH_KEY_STRING);
        j->status = sip_location_reg_check(j->pool, cur, &j->chg, &added);
        if (j->status) {
            j->result = copy_bindings(j->pool, cur);
            continue;
        }
        if (rows_only(p, &j->chg)) {
            change_rows(p, &j->chg, cur, &rows);
            j->result = rows_after(j->pool, &j->chg, cur);
        }
        else {
            db_change_sql(p, db, &j->chg, cur, writes);
            plain = 0;
        }
        *(const char **)apr_array_push(noted) = j->chg.aor;
        *(const char **)apr_array_push(written) = j->chg.aor;
    }
    if (!before || !written->nelts)
        return 1;
    /* one statement for all the rows: PostgreSQL parses and plans it once */
    if (rows.col[0]->nelts)
        *(const char **)apr_array_push(writes) = batch_insert(p, db, &rows);
    if (notify_on(db))
        batch_notes(p, db, noted, writes);
    if (all && plain) {
        /* the answers are known: the commit ends the same round trip */
        *(const char **)apr_array_push(writes) = "COMMIT";
        if (db_exec(p, db, apr_array_pstrcat(p, writes, ';')) == 0)
            *committed = 1;
        else
            for (i = 0; i < n; i++)
                if (!jobs[i]->status)
                    jobs[i]->status = jobs[i]->dberr = 500;
        return 1;
    }
    after = NULL;
    if (!writes->nelts || db_exec(p, db, apr_array_pstrcat(p, writes, ';')) == 0)
        after = db_select_where(p, db, aor_any(p, db, written));
    for (i = 0; i < n; i++) {
        loc_job_t *j = jobs[i];
        if (!handled[i] || j->status)
            continue;
        if (!after)
            j->status = j->dberr = 500;
        else
            j->result = copy_bindings(j->pool, apr_hash_get(after, j->chg.aor,
                                                            APR_HASH_KEY_STRING));
    }
    return 1;
}

/* mod_status: a transaction of 'n' changes committed, begun at 't0' (the
 * engine's own slot; only this thread writes these counters). */
static void batch_counted(int n, apr_time_t t0)
{
    sip_stats->loc_batches++;
    sip_stats->loc_batch_changes += (apr_uint64_t)n;
    sip_stats->loc_batch_us += (apr_uint64_t)(apr_time_now() - t0);
}

/* Group commit: the registers of a batch in one transaction, each answered
 * only once it is committed.  When anything in it fails (a statement, the
 * commit), it is rolled back and every change is applied again in a
 * transaction of its own, so that one bad change fails alone.  Returns the
 * connection now in use (another when it had died), or NULL. */
static ap_dbd_t *db_run_batch(ap_dbd_t *db, apr_pool_t *tp, loc_job_t **jobs, int n)
{
    APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    db_tx_t tx;
    char *handled = apr_pcalloc(tp, (apr_size_t)n);
    int i, failed = 0, started, committed = 0, before = db_failures;
    apr_time_t t0 = apr_time_now();

    if (n == 1) {
        db_run_job(db, jobs[0], 0);
        if (!jobs[0]->dberr)
            batch_counted(1, t0);
        return db;
    }
    if (is_pgsql(db)) {
        /* BEGIN goes with the first SELECT, unless no change is for the fast way */
        tx.tx = NULL;
        tx.plain = 1;
        started = db_run_fast(db, tp, jobs, n, handled, &committed)
                  || db_tx_start(tp, db, &tx) == 0;
        failed = !started || db_failures != before;
    }
    else {
        started = db_tx_start(tp, db, &tx) == 0;
        failed = !started;
    }
    for (i = 0; i < n && !failed; i++) {
        if (handled[i]) {
            failed = jobs[i]->dberr;
            continue;
        }
        db_run_job(db, jobs[i], 1);
        failed = jobs[i]->dberr || db_failures != before;
    }
    if (started && !committed && db_tx_end(tp, db, &tx, failed) != 0)
        failed = 1;
    if (!failed) {
        batch_counted(n, t0);
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, dbd_server,
                     "sip location: %d changes committed in one transaction", n);
        return db;
    }
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, dbd_server, "sip location: a transaction of %d "
                 "changes failed; applying them one by one", n);
    /* a connection that died is not worth the retries: a fresh one */
    if (apr_dbd_check_conn(db->driver, tp, db->handle) != APR_SUCCESS && dbd_open && dbd_close) {
        ap_dbd_t *fresh;
        dbd_close(dbd_server, db);
        fresh = dbd_open(tp, dbd_server);
        if (!fresh) {
            for (i = 0; i < n; i++)
                jobs[i]->status = jobs[i]->dberr = 500;
            return NULL;
        }
        db = fresh;
    }
    for (i = 0; i < n; i++) {
        loc_job_t *j = jobs[i];
        j->status = j->dberr = 0;
        j->result = j->scripts = NULL;
        db_run_job(db, j, 0);
    }
    return db;
}

static void db_cleanup_job(ap_dbd_t *db, loc_job_t *j)
{
    /* safe with several nodes: only rows whose time is past.  A range on
     * expires (markers have 0): planned on its index even before the
     * table has statistics, where "expires < now" alone was a sequential
     * scan that held up the batches behind it (270 ms at 160 000 rows) */
    db_exec(j->pool, db, apr_psprintf(j->pool, "DELETE FROM sip_location WHERE contact <> '' "
                                      "AND expires > 0 AND expires < %" APR_TIME_T_FMT,
                                      apr_time_now()));
}

static int is_cleanup(const loc_job_t *j)
{
    return j->aor && !j->fetch && j->chg.aor == NULL;
}

static void wake_loop(void)
{
    char one = 1;

    if (write(dbd_wake[1], &one, 1) < 0) {
        /* the pipe is full: the loop is already awake */
    }
}

static void *APR_THREAD_FUNC db_thread(apr_thread_t *thd, void *data)
{
    APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    apr_pool_t *tp;
    int schema_done = 0;
    loc_job_t **batch = malloc(sizeof(*batch) * (size_t)dbd_batch_max);

    (void)data;
    apr_pool_create(&tp, NULL);
    while (batch) {
        loc_job_t *taken, *j, *last = NULL;
        ap_dbd_t *db;
        apr_uint64_t stamp;
        int n = 0, k;

        /* everything queued, up to the bound: one transaction for all */
        apr_thread_mutex_lock(dbd_lock);
        while (!dbd_todo && !dbd_stopping)
            apr_thread_cond_wait(dbd_cond, dbd_lock);
        if (dbd_stopping) {
            apr_thread_mutex_unlock(dbd_lock);
            break;
        }
        taken = dbd_todo;
        for (j = taken, k = 0; j && k < dbd_batch_max; j = j->next, k++)
            last = j;
        dbd_todo = last->next;
        last->next = NULL;
        if (!dbd_todo)
            dbd_todo_tail = NULL;
        stamp = dbd_changes;
        apr_thread_mutex_unlock(dbd_lock);

        db = dbd_open ? dbd_open(tp, dbd_server) : NULL;
        if (!db)
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server,
                         "sip location: no database connection (is mod_dbd configured?)");
        else if (!schema_done)
            schema_done = db_schema(tp, db);
        for (j = taken; j; j = j->next) {
            j->stamp = stamp;
            if (!db)
                j->status = j->dberr = 500;
            else if (!j->fetch && !is_cleanup(j))
                batch[n++] = j;
        }
        if (db && n)
            db = db_run_batch(db, tp, batch, n);
        /* reads after the commit: a lookup queued behind a REGISTER sees it
         * (and does not put an older answer in the cache after the
         * REGISTER's) */
        for (j = taken; j; j = j->next) {
            if (!db && (j->fetch || is_cleanup(j)))
                j->status = j->dberr = 500;
            else if (is_cleanup(j))
                db_cleanup_job(db, j);
            else if (j->fetch)
                db_run_job(db, j, 0);
        }
        if (db && dbd_close)
            dbd_close(dbd_server, db);
        apr_pool_clear(tp);
        apr_thread_mutex_lock(dbd_lock);
        while (taken) {             /* dbd_done is newest first */
            j = taken;
            taken = j->next;
            j->next = dbd_done;
            dbd_done = j;
        }
        apr_thread_mutex_unlock(dbd_lock);
        wake_loop();
    }
    free(batch);
    apr_pool_destroy(tp);
    /* Return, not apr_thread_exit(): pthread_exit's forced unwind leaves
     * ASan's stack redzones poisoned for the thread's own teardown (a false
     * stack-buffer-overflow; with SQLite the listener ends at once). */
    (void)thd;
    return NULL;
}

/* Bring a note to the loop (under dbd_lock). */
static void note_add(const char *aor, size_t len)
{
    note_t *n = malloc(sizeof(*n) + len);

    if (n) {
        memcpy(n->aor, aor, len);
        n->aor[len] = '\0';
        n->next = dbd_notes;
        dbd_notes = n;
    }
    else
        dbd_flush = 1;
    dbd_changes++;
}

static void listening_set(int on)
{
    apr_thread_mutex_lock(dbd_lock);
    dbd_listening = on;
    dbd_flush = 1;          /* what came while nobody listened is unknown */
    dbd_changes++;
    apr_thread_mutex_unlock(dbd_lock);
    wake_loop();
}

/* PostgreSQL: a connection of its own LISTENs on the channel; its socket
 * is polled here, off the engine's loop, and each note another engine
 * sent becomes "drop this AoR from the cache".  Lost, it is opened again,
 * and meanwhile the cache is not trusted. */
static void *APR_THREAD_FUNC listen_thread(apr_thread_t *thd, void *data)
{
    APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    apr_pool_t *tp;

    (void)data;
    apr_pool_create(&tp, NULL);
    while (dbd_open && dbd_close && !dbd_stopping) {
        ap_dbd_t *db = dbd_open(tp, dbd_server);
        PGconn *pc;

        if (!db) {
            apr_sleep(apr_time_from_msec(500));
            continue;
        }
        if (!is_pgsql(db)) {        /* SQLite: no notes; SipLocationCacheTTL rules */
            dbd_close(dbd_server, db);
            break;
        }
        pc = apr_dbd_native_handle(db->driver, db->handle);
        if (pc && db_exec(tp, db, apr_pstrcat(tp, "LISTEN ", dbd_channel, NULL)) == 0) {
            listening_set(1);
            for (;;) {
                struct pollfd pfd = { PQsocket(pc), POLLIN, 0 };
                PGnotify *nt;
                int r = poll(&pfd, 1, 1000), got = 0;
                if (r < 0 && errno != EINTR)
                    break;
                if (!PQconsumeInput(pc) || PQstatus(pc) != CONNECTION_OK)
                    break;
                apr_thread_mutex_lock(dbd_lock);
                while ((nt = PQnotifies(pc))) {
                    const char *aors = note_foreign_aor(nt->extra, dbd_node), *nl;
                    while (aors && *aors) {     /* one AoR a line */
                        nl = strchr(aors, '\n');
                        note_add(aors, nl ? (size_t)(nl - aors) : strlen(aors));
                        got = 1;
                        aors = nl ? nl + 1 : NULL;
                    }
                    PQfreemem(nt);
                }
                apr_thread_mutex_unlock(dbd_lock);
                if (got)
                    wake_loop();
            }
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server, "sip location: the connection "
                         "listening for changes was lost (%s); opening another",
                         PQerrorMessage(pc));
            listening_set(0);
            if (PQstatus(pc) == CONNECTION_OK)
                db_exec(tp, db, "UNLISTEN *");
        }
        dbd_close(dbd_server, db);
        apr_pool_clear(tp);
        apr_sleep(apr_time_from_msec(200));
    }
    apr_pool_destroy(tp);
    /* Return, not apr_thread_exit(): pthread_exit's forced unwind leaves
     * ASan's stack redzones poisoned for the thread's own teardown (a false
     * stack-buffer-overflow; with SQLite the listener ends at once). */
    (void)thd;
    return NULL;
}

/* The flows of bindings kept in the database: a connection belongs to this
 * engine alone, so it is kept here ("aor \2 uri key" -> flow_rec_t), set
 * when a REGISTER made over one is stored, and added to what the database
 * answers.  Another node sharing the database sees the binding without
 * its flow (and does not use it when its transport needs one). */
typedef struct flow_rec {
    char *hkey;
    apr_uint64_t flow;
    apr_time_t expires;
} flow_rec_t;

static apr_hash_t *dbd_flows;

static int flow_open(apr_uint64_t id)
{
    sip_source_t src;

    if (!sip_transport_flow_source(id, &src))
        return 0;
    sip_source_release(&src);
    return 1;
}

static void dbd_flow_del(const char *hkey)
{
    flow_rec_t *r = apr_hash_get(dbd_flows, hkey, APR_HASH_KEY_STRING);

    if (r) {
        apr_hash_set(dbd_flows, hkey, APR_HASH_KEY_STRING, NULL);
        free(r->hkey);
        free(r);
    }
}

/* A stored change: its bindings' flows ("Contact: *" forgets the AoR's). */
static void dbd_flows_apply(apr_pool_t *p, const sip_reg_change_t *chg)
{
    apr_hash_index_t *hi;
    int i;

    if (chg->star) {
        const char *prefix = apr_pstrcat(p, chg->aor, "\2", NULL);
        apr_array_header_t *gone = apr_array_make(p, 4, sizeof(const char *));
        for (hi = apr_hash_first(p, dbd_flows); hi; hi = apr_hash_next(hi)) {
            const char *k = apr_hash_this_key(hi);
            if (!strncmp(k, prefix, strlen(prefix)))
                *(const char **)apr_array_push(gone) = k;
        }
        for (i = 0; i < gone->nelts; i++)
            dbd_flow_del(APR_ARRAY_IDX(gone, i, const char *));
        return;
    }
    for (i = 0; i < chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *hkey = apr_pstrcat(p, chg->aor, "\2", sip_binding_identity(p, b), NULL);
        flow_rec_t *r;
        dbd_flow_del(hkey);
        if (!b->flow || b->expires <= apr_time_now())
            continue;
        r = malloc(sizeof(*r));
        if (!r || !(r->hkey = strdup(hkey))) {
            free(r);
            continue;
        }
        r->flow = b->flow;
        r->expires = b->expires;
        apr_hash_set(dbd_flows, r->hkey, APR_HASH_KEY_STRING, r);
    }
}

/* The flows of bindings read from the database. */
static void dbd_flows_add(apr_pool_t *p, apr_array_header_t *bs)
{
    int i;

    for (i = 0; bs && i < bs->nelts; i++) {
        sip_binding_t *b = APR_ARRAY_IDX(bs, i, sip_binding_t *);
        const char *hkey = apr_pstrcat(p, b->aor, "\2", sip_binding_identity(p, b), NULL);
        flow_rec_t *r = apr_hash_get(dbd_flows, hkey, APR_HASH_KEY_STRING);
        b->flow = r ? r->flow : 0;
    }
}

/* Every minute: forget the flows of expired bindings and closed connections. */
static void dbd_flows_sweep(apr_pool_t *p)
{
    apr_array_header_t *gone = apr_array_make(p, 4, sizeof(const char *));
    apr_hash_index_t *hi;
    apr_time_t now = apr_time_now();
    int i;

    for (hi = apr_hash_first(p, dbd_flows); hi; hi = apr_hash_next(hi)) {
        flow_rec_t *r = apr_hash_this_val(hi);
        if (r->expires <= now || !flow_open(r->flow))
            *(const char **)apr_array_push(gone) = r->hkey;
    }
    for (i = 0; i < gone->nelts; i++)
        dbd_flow_del(APR_ARRAY_IDX(gone, i, const char *));
}

/* ---- the cache (the loop's alone) ----
 * What the database said of an AoR, kept right by this engine's own
 * writes (a REGISTER's answer is the AoR after its commit) and dropped
 * when a note says another engine changed it.  Trusted while notes
 * arrive; without them (SQLite, SipLocationNotify off, the listening
 * connection lost), only for SipLocationCacheTTL.  Bindings are handed
 * out without those expired since. */
typedef struct cache_ent {
    apr_pool_t *pool;
    const char *aor;
    int have_bindings;
    apr_array_header_t *bindings;   /* sip_binding_t *; NULL: never registered */
    apr_array_header_t *scripts;    /* sip_script_t *; NULL: not known here */
    apr_time_t filled;
} cache_ent_t;

static apr_hash_t *dbd_cache;
static apr_size_t dbd_cache_max = SIP_LOC_CACHE_MAX;
static int cache_listening;         /* the loop's copy of dbd_listening */

static void cache_drop(const char *aor)
{
    cache_ent_t *e = apr_hash_get(dbd_cache, aor, APR_HASH_KEY_STRING);

    if (e) {
        apr_hash_set(dbd_cache, aor, APR_HASH_KEY_STRING, NULL);
        apr_pool_destroy(e->pool);
    }
}

static void cache_clear(void)
{
    apr_hash_index_t *hi;

    while ((hi = apr_hash_first(NULL, dbd_cache)))
        cache_drop(apr_hash_this_key(hi));
}

static int cache_on(void)
{
    return cache_listening || dbd_ttl > 0;
}

static cache_ent_t *cache_get(const char *aor, apr_time_t now)
{
    cache_ent_t *e = dbd_cache ? apr_hash_get(dbd_cache, aor, APR_HASH_KEY_STRING) : NULL;

    if (e && !cache_listening && (dbd_ttl <= 0 || now - e->filled >= dbd_ttl)) {
        cache_drop(aor);
        return NULL;
    }
    return e;
}

/* Store what the database said: bindings when 'set_bindings', scripts
 * when 'set_scripts' (NULL: forget them), the rest kept. */
static void cache_put(const char *aor, int set_bindings, const apr_array_header_t *bindings,
                      int set_scripts, const apr_array_header_t *scripts)
{
    cache_ent_t *old = apr_hash_get(dbd_cache, aor, APR_HASH_KEY_STRING), *e;
    apr_pool_t *ep;

    if (!old && apr_hash_count(dbd_cache) >= dbd_cache_max)
        cache_clear();      /* crude, but bounded and rare */
    apr_pool_create(&ep, NULL);
    e = apr_pcalloc(ep, sizeof(*e));
    e->pool = ep;
    e->aor = apr_pstrdup(ep, aor);
    e->filled = apr_time_now();
    if (set_bindings) {
        e->have_bindings = 1;
        e->bindings = copy_bindings(ep, bindings);
    }
    else if (old && old->have_bindings) {
        e->have_bindings = 1;
        e->bindings = copy_bindings(ep, old->bindings);
        e->filled = old->filled;
    }
    e->scripts = copy_scripts(ep, set_scripts ? scripts : old ? old->scripts : NULL);
    if (old)
        cache_drop(aor);
    apr_hash_set(dbd_cache, e->aor, APR_HASH_KEY_STRING, e);
}

/* The cached bindings still alive, copied into 'p' (NULL: never registered). */
static apr_array_header_t *cache_bindings(apr_pool_t *p, const cache_ent_t *e, apr_time_t now)
{
    apr_array_header_t *out = copy_bindings(p, e->bindings);
    int i, k = 0;

    for (i = 0; out && i < out->nelts; i++) {
        sip_binding_t *b = APR_ARRAY_IDX(out, i, sip_binding_t *);
        if (b->expires > now)
            APR_ARRAY_IDX(out, k++, sip_binding_t *) = b;
    }
    if (out)
        out->nelts = k;
    return out;
}

/* A job's answer may fill the cache when no note came since its read. */
static int cache_may_fill(const loc_job_t *j, apr_uint64_t changes)
{
    return cache_on() && !j->dberr && j->stamp == changes;
}

void sip_location_dbd_flows(apr_pool_t *p, const sip_reg_change_t *chg)
{
    if (dbd_flows)
        dbd_flows_apply(p, chg);
}

void sip_location_dbd_invalidate(const char *aor)
{
    if (!dbd_lock)
        return;
    if (dbd_cache)
        cache_drop(aor);
    apr_thread_mutex_lock(dbd_lock);
    dbd_changes++;          /* a read already under way is as stale */
    apr_thread_mutex_unlock(dbd_lock);
}

static void dbd_completed(void *baton, apr_int16_t ev)
{
    char buf[64];
    loc_job_t *list, *rev = NULL, *first, *j;
    apr_array_header_t *announced;
    note_t *notes;
    apr_uint64_t changes;
    int flush;

    (void)baton;
    (void)ev;
    while (read(dbd_wake[0], buf, sizeof(buf)) > 0)
        ;
    apr_thread_mutex_lock(dbd_lock);
    list = dbd_done;
    dbd_done = NULL;
    notes = dbd_notes;
    dbd_notes = NULL;
    flush = dbd_flush;
    dbd_flush = 0;
    changes = dbd_changes;
    cache_listening = dbd_listening;
    apr_thread_mutex_unlock(dbd_lock);
    if (flush)
        cache_clear();
    while (notes) {
        note_t *n = notes;
        notes = n->next;
        cache_drop(n->aor);
        free(n);
    }
    while (list) {                  /* oldest first */
        loc_job_t *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    first = rev;
    announced = rev ? apr_array_make(rev->pool, 16, sizeof(const char *)) : NULL;
    for (j = rev; j; j = j->next) {
        if (j->reg_cb) {
            apr_array_header_t *cur = copy_bindings(j->caller_pool, j->result);
            if (!j->status) {
                dbd_flows_apply(j->pool, &j->chg);
                /* scripts the change touched are forgotten unless reported */
                if (cache_may_fill(j, changes))
                    cache_put(j->chg.aor, 1, j->result,
                              j->chg.want_scripts || (j->chg.script_ops
                                                      && j->chg.script_ops->nelts),
                              j->chg.want_scripts ? j->scripts : NULL);
                else
                    cache_drop(j->chg.aor);
            }
            dbd_flows_add(j->pool, cur);
            j->answer = cur;
            if (!j->status && j->announce)
                sip_location_dbd_announce(rev->pool, announced, j->chg.aor, cur);
        }
    }
    /* the other engines know before the phones do */
    if (announced)
        sip_location_dbd_announce_send(rev->pool, announced);
    while (rev) {
        j = rev;
        rev = j->next;
        if (j->reg_cb)
            j->reg_cb(j->baton, j->status, j->answer, copy_scripts(j->caller_pool, j->scripts));
        else if (j->scripts_cb) {
            if (!j->status && cache_may_fill(j, changes))
                cache_put(j->aor, 0, NULL, 1, j->scripts);
            j->scripts_cb(j->baton, j->status, j->status ? NULL
                          : copy_scripts(j->caller_pool, j->scripts));
        }
        else if (j->cb) {
            apr_array_header_t *cur = copy_bindings(j->caller_pool, j->result);
            if (!j->status && cache_may_fill(j, changes))
                cache_put(j->aor, 1, j->result, 0, NULL);
            dbd_flows_add(j->pool, cur);
            j->cb(j->baton, j->status, cur);
        }
        else if (j->aor && !*j->aor)
            dbd_flows_sweep(j->pool);   /* the cleanup job is back */
        if (j != first)
            apr_pool_destroy(j->pool);
    }
    if (first)
        apr_pool_destroy(first->pool);  /* it held the announcements */
}

static void dbd_submit(loc_job_t *j)
{
    apr_thread_mutex_lock(dbd_lock);
    if (dbd_todo_tail)
        dbd_todo_tail->next = j;
    else
        dbd_todo = j;
    dbd_todo_tail = j;
    apr_thread_cond_signal(dbd_cond);
    apr_thread_mutex_unlock(dbd_lock);
}

static loc_job_t *new_job(apr_pool_t *caller, sip_location_cb cb, void *baton);

static void dbd_cleanup(void *baton)
{
    loc_job_t *j = new_job(NULL, NULL, NULL);

    (void)baton;
    j->aor = "";    /* neither fetch nor register: the cleanup */
    dbd_submit(j);
    sip_timer_set(dbd_loop, &dbd_cleanup_timer, apr_time_from_sec(60), dbd_cleanup, NULL);
}

apr_status_t sip_location_dbd_start(sip_loop_t *loop, apr_pool_t *p)
{
    apr_thread_t *thd;
    apr_status_t rv;
    apr_socket_t *sock = NULL;
    apr_file_t *rf = NULL;

    (void)sock;
    dbd_loop = loop;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, dbd_server,
                 "sip location: bindings are kept in the mod_dbd database");
    if (pipe2(dbd_wake, O_NONBLOCK | O_CLOEXEC) < 0)
        return errno;
    if ((rv = apr_thread_mutex_create(&dbd_lock, APR_THREAD_MUTEX_DEFAULT, p))
        || (rv = apr_thread_cond_create(&dbd_cond, p)))
        return rv;
    dbd_flows = apr_hash_make(p);
    dbd_cache = apr_hash_make(p);
    {
        unsigned char rnd[8];
        if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS)
            memcpy(rnd, &p, sizeof(rnd) < sizeof(p) ? sizeof(rnd) : sizeof(p));
        apr_snprintf(dbd_node, sizeof(dbd_node), "%" APR_PID_T_FMT "-%02x%02x%02x%02x%02x%02x",
                     getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    }
    apr_os_pipe_put(&rf, &dbd_wake[0], p);
    sip_io_init_file(&dbd_wake_io, rf, dbd_completed, NULL);
    sip_io_watch(dbd_loop, &dbd_wake_io, APR_POLLIN);
    rv = apr_thread_create(&thd, NULL, db_thread, NULL, p);
    if (rv == APR_SUCCESS && dbd_channel)
        rv = apr_thread_create(&thd, NULL, listen_thread, NULL, p);
    if (rv == APR_SUCCESS)
        sip_timer_set(dbd_loop, &dbd_cleanup_timer, apr_time_from_sec(5), dbd_cleanup, NULL);
    return rv;
}

/* ---- the interface ---- */

/* A job for the database thread, in a pool of its own (the thread must not
 * touch the caller's). */
static loc_job_t *new_job(apr_pool_t *caller, sip_location_cb cb, void *baton)
{
    apr_pool_t *jp;
    loc_job_t *j;

    apr_pool_create(&jp, NULL);
    j = apr_pcalloc(jp, sizeof(*j));
    j->pool = jp;
    j->caller_pool = caller;
    j->cb = cb;
    j->baton = baton;
    return j;
}

void sip_location_dbd_register(apr_pool_t *p, const sip_reg_change_t *chg, int announce,
                               sip_location_reg_cb cb, void *baton)
{
    loc_job_t *j = new_job(p, NULL, baton);
    apr_pool_t *jp = j->pool;
    int i;

    j->reg_cb = cb;
    j->announce = announce;
    j->chg = *chg;
    j->chg.script_ops = copy_ops(jp, chg->script_ops);
    j->chg.aor = apr_pstrdup(jp, chg->aor);
    j->chg.call_id = apr_pstrdup(jp, chg->call_id);
    j->chg.bindings = apr_array_copy(jp, chg->bindings);
    for (i = 0; i < j->chg.bindings->nelts; i++) {
        sip_binding_t *b = &APR_ARRAY_IDX(j->chg.bindings, i, sip_binding_t);
        b->aor = j->chg.aor;
        b->contact = apr_pstrdup(jp, b->contact);
        b->params = apr_pstrdup(jp, b->params ? b->params : "");
        b->call_id = j->chg.call_id;
        b->path = b->path ? apr_pstrdup(jp, b->path) : NULL;
        b->display = b->display ? apr_pstrdup(jp, b->display) : NULL;
        b->key = b->key ? apr_pstrdup(jp, b->key) : NULL;
        b->received = b->received ? apr_pstrdup(jp, b->received) : NULL;
        b->instance = b->instance ? apr_pstrdup(jp, b->instance) : NULL;
    }
    dbd_submit(j);
}

void sip_location_dbd_fetch_scripts(apr_pool_t *p, const char *aor, sip_location_scripts_cb cb,
                                    void *baton)
{
    cache_ent_t *e = cache_get(aor, apr_time_now());
    loc_job_t *j;

    if (e && e->scripts) {
        cb(baton, 0, copy_scripts(p, e->scripts));
        return;
    }
    j = new_job(p, NULL, baton);
    j->scripts_cb = cb;
    j->fetch = 2;
    j->aor = apr_pstrdup(j->pool, aor);
    dbd_submit(j);
}

void sip_location_dbd_fetch(apr_pool_t *p, const char *aor, sip_location_cb cb, void *baton)
{
    apr_time_t now = apr_time_now();
    cache_ent_t *e = cache_get(aor, now);
    loc_job_t *j;

    if (e && e->have_bindings) {
        apr_array_header_t *cur = cache_bindings(p, e, now);
        dbd_flows_add(p, cur);
        cb(baton, 0, cur);
        return;
    }
    j = new_job(p, cb, baton);
    j->fetch = 1;
    j->aor = apr_pstrdup(j->pool, aor);
    dbd_submit(j);
}
