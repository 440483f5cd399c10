/* FastCGI answers from a worker (sip_fcgi_parse): the input is the byte
 * stream of a connection, fed in pieces whose sizes come from the first
 * byte; the same stream fed whole must give the same result, stdout and
 * stderr.  The same stream goes through the connection-level
 * demultiplexer (sip_fcgi_demux) with requests 1 and 2 in flight, whole and
 * in pieces, with the same outcome; as in the engine, a request's parser
 * is freed when its END_REQUEST is complete ('after' with ended), so the
 * demultiplexer touching it later is a use after free.  The rest is read as PARAMS content
 * (sip_fcgi_decode_params) and GET_VALUES_RESULT content, and pairs encoded
 * back must decode to the same table. */
#include "fuzz_common.h"

typedef struct {
    apr_size_t out, err;
    unsigned hash;
} fz_acc_t;

static void fz_out(void *b, const char *buf, apr_size_t len)
{
    fz_acc_t *a = b;
    for (apr_size_t i = 0; i < len; i++)
        a->hash = a->hash * 31 + (unsigned char)buf[i];
    a->out += len;
}

static void fz_err(void *b, const char *buf, apr_size_t len)
{
    fz_acc_t *a = b;
    (void)buf;
    a->err += len;
}

static int fz_feed(const uint8_t *data, size_t size, size_t step, fz_acc_t *acc,
                   sip_fcgi_parser_t *ps, apr_size_t *consumed)
{
    size_t pos = 0;
    int r = 0;

    sip_fcgi_parser_init(ps, 1, 1000, fz_out, fz_err, acc);
    *consumed = 0;
    while (pos < size) {
        size_t n = size - pos < step ? size - pos : step;
        apr_size_t used = 0;
        const char *why = NULL;
        r = sip_fcgi_parse(ps, (const char *)data + pos, n, &used, &why);
        if (used > n)
            abort();
        *consumed += used;
        if (r < 0 && !why)
            abort();
        if (r != 0)
            return r;
        if (used != n)
            abort();
        pos += n;
    }
    return r;
}

typedef struct {
    sip_fcgi_parser_t *ps[2];   /* malloc'd; freed at END_REQUEST */
    fz_acc_t acc[2];
    int live[2], ended[2], mgmt;
} fz_mux_t;

static sip_fcgi_parser_t *fz_lookup(void *b, apr_uint16_t id)
{
    fz_mux_t *m = b;
    return id >= 1 && id <= 2 && m->live[id - 1] ? m->ps[id - 1] : NULL;
}

static int fz_mgmt(void *b, int type, const unsigned char *c, apr_size_t len)
{
    fz_mux_t *m = b;
    int mpxs, maxr;
    const char *why;
    if (len > SIP_FCGI_MGMT_MAX)
        abort();
    m->mgmt++;
    if (type == AP_FCGI_GET_VALUES_RESULT && sip_fcgi_parse_values(c, len, &mpxs, &maxr, &why) < 0)
        return -1;
    return 0;
}

static int fz_after(void *b, sip_fcgi_parser_t *ps, int ended)
{
    fz_mux_t *m = b;
    int i = ps == m->ps[0] ? 0 : 1;
    if (!m->live[i] || ps != m->ps[i])
        abort();    /* a parser no longer in flight was fed */
    if (ended) {
        m->ended[i]++;
        m->live[i] = 0;
        free(m->ps[i]);     /* the engine destroys the request's pool here */
        m->ps[i] = NULL;
    }
    return 0;
}

static void fz_mux_free(fz_mux_t *m)
{
    int i;
    for (i = 0; i < 2; i++) {
        free(m->ps[i]);
        m->ps[i] = NULL;
    }
}

static int fz_demux(const uint8_t *data, size_t size, size_t step, fz_mux_t *m)
{
    sip_fcgi_demux_t d;
    size_t pos = 0;
    int i;

    memset(m, 0, sizeof(*m));
    for (i = 0; i < 2; i++) {
        m->ps[i] = malloc(sizeof(*m->ps[i]));
        if (!m->ps[i])
            abort();
        sip_fcgi_parser_init(m->ps[i], (apr_uint16_t)(i + 1), 1000, fz_out, fz_err, &m->acc[i]);
        m->live[i] = 1;
    }
    sip_fcgi_demux_init(&d, fz_lookup, fz_mgmt, fz_after, m);
    while (pos < size) {
        size_t n = size - pos < step ? size - pos : step;
        const char *why = NULL;
        int r = sip_fcgi_demux(&d, (const char *)data + pos, n, &why);
        if (r < 0 && !why)
            abort();
        if (r != 0) {
            fz_mux_free(m);
            return r;
        }
        pos += n;
    }
    fz_mux_free(m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    fz_acc_t a = {0, 0, 0}, b = {0, 0, 0};
    sip_fcgi_parser_t pa, pb;
    apr_size_t ca, cb;
    size_t step;
    int ra, rb;
    apr_table_t *t = apr_table_make(p, 4), *t2 = apr_table_make(p, 4);
    const char *why;

    if (size < 1)
        return fuzz_done();
    step = (data[0] % 16) + 1;
    ra = fz_feed(data + 1, size - 1, size, &a, &pa, &ca);
    rb = fz_feed(data + 1, size - 1, step, &b, &pb, &cb);
    if (ra != rb || a.out != b.out || a.hash != b.hash)
        abort();
    if (ra == 1 && (ca != cb || pa.app_status != pb.app_status))
        abort();
    if (a.err > 1000)
        abort();
    {
        static fz_mux_t ma, mb;
        int da = fz_demux(data + 1, size - 1, size, &ma);
        int db = fz_demux(data + 1, size - 1, step, &mb);
        int i;
        if (da != db || ma.mgmt != mb.mgmt)
            abort();
        for (i = 0; i < 2; i++)
            if (ma.ended[i] != mb.ended[i] || ma.acc[i].out != mb.acc[i].out
                || ma.acc[i].hash != mb.acc[i].hash || ma.acc[i].err > 1000)
                abort();
    }

    if (sip_fcgi_decode_params(p, data + 1, size - 1, t, &why) == 0) {
        const apr_array_header_t *e = apr_table_elts(t);
        const apr_table_entry_t *ent = (const apr_table_entry_t *)e->elts;
        apr_size_t len = 0, off = 0;
        unsigned char *buf;
        int i;
        for (i = 0; i < e->nelts; i++)
            len += sip_fcgi_encode_pair(NULL, ent[i].key, strlen(ent[i].key), ent[i].val,
                                        strlen(ent[i].val));
        buf = apr_palloc(p, len + 1);
        for (i = 0; i < e->nelts; i++)
            off += sip_fcgi_encode_pair(buf + off, ent[i].key, strlen(ent[i].key), ent[i].val,
                                        strlen(ent[i].val));
        if (off != len || sip_fcgi_decode_params(p, buf, len, t2, &why) != 0
            || apr_table_elts(t2)->nelts != e->nelts)
            abort();
    }
    return fuzz_done();
}
