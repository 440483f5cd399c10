/* Unit tests (Check) for mod_sip's pure parsers and helpers.
 *
 * Like httpd's own test/unit, the module sources are #included so that
 * static helpers and private structures are reachable; httpd_stubs.h
 * supplies the handful of httpd symbols that live in the server binary
 * (and aborting stand-ins for the sip_txn_*() calls of the script runner,
 * which is not under test here).
 *
 * Build and run: make unit   (t/unit/test_units exits non-zero on failure)
 */
#include "../../sip_transport.c"
#include "../../sip_cgi.c"
#include "../../sip_message.c"
#include "../../sip_event.c"
#include "../../sip_transaction.c"
#include "../../sip_proxy.c"
#include "../../sip_route.c"
#include "../../sip_location.c"
#include "../../sip_script_store.c"
#include "../../sip_upload.c"
#include "../../sip_cpl.c"
#include "../../sip_cpl_run.c"
#include "../../sip_cpl_time.c"
#include "../../sip_cpl_mail.c"
#include "../../sip_mime.c"
#include "../../sip_register_payload.c"
#include "../../sip_registrar.c"
#include "../../sip_relay.c"
#include "../../sip_options.c"
#include "../../sip_auth.c"
#include "../../sip_nonce.c"
#include "../../sip_stats.c"
#include "../../sip_log.c"
#include "../../sip_uri_list.c"
#include "../../sip_explode.c"
#include "../../sip_consent.c"
#include "../../sip_explode_run.c"
#include "../../sip_rules.c"
#include "../../sip_namemap.c"
#include "../../sip_lists.c"
#include "../../sip_forward.c"
#include "../../sip_tls.c"
#include "../../sip_ws.c"
#include "../../sip_fcgi.c"
#include "../../sip_fcgi_pool.c"
#include "../../sip_dns.c"
#include "../../sip_freelist.c"
#include "../../sip_location_dbd.c"
#include "../../sip_stun.c"
#include "../../sip_handover.c"
#include "../../sip_replica.c"

#include "httpd_stubs.h"

#include <check.h>
#include <stdarg.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apr_general.h"

/* ------------------------------------------------------------------ */
/* common fixture: one APR pool per test                               */

static apr_pool_t *pool;

static void pool_setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
}

static void pool_teardown(void)
{
    apr_pool_destroy(pool);
    pool = NULL;
}

/* ================================================================== */
/* 1. sip_stream_frame                                                 */

#define MAXH 8192
#define MAXB 65536

static const char FRAME_INVITE[] =
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    "Call-ID: frame-1@192.0.2.1\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 10\r\n"
    "\r\n"
    "0123456789";

static const char FRAME_OPTIONS[] =
    "OPTIONS sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK2\r\n"
    "Content-Length: 0\r\n"
    "\r\n";

static int frame(const char *buf, apr_size_t len, apr_size_t *n)
{
    return sip_stream_frame(buf, len, MAXH, MAXB, n);
}

/* A malloc'ed copy of exactly 'len' bytes, so that reading past the end
 * shows up under AddressSanitizer or valgrind. */
static char *exact(const char *buf, apr_size_t len)
{
    char *c = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(c);
    memcpy(c, buf, len);
    return c;
}

START_TEST(frame_complete_with_body)
{
    apr_size_t n = 0;
    ck_assert_int_eq(frame(FRAME_INVITE, strlen(FRAME_INVITE), &n), 1);
    ck_assert_uint_eq(n, strlen(FRAME_INVITE));
}
END_TEST

START_TEST(frame_every_split_point)
{
    const apr_size_t len = strlen(FRAME_INVITE);
    apr_size_t k;

    for (k = 0; k < len; k++) {
        apr_size_t n = 12345;
        char *prefix = exact(FRAME_INVITE, k);
        int r = frame(prefix, k, &n);
        free(prefix);
        ck_assert_msg(r == 0, "prefix of %zu/%zu bytes gave %d, expected 0", k, len, r);
    }
    {
        apr_size_t n = 0;
        ck_assert_int_eq(frame(FRAME_INVITE, len, &n), 1);
        ck_assert_uint_eq(n, len);
    }
}
END_TEST

START_TEST(frame_pipelined)
{
    char *two = apr_pstrcat(pool, FRAME_INVITE, FRAME_OPTIONS, NULL);
    apr_size_t n = 0, k;

    ck_assert_int_eq(frame(two, strlen(two), &n), 1);
    ck_assert_uint_eq(n, strlen(FRAME_INVITE));
    /* the second one frames on its own once the first is consumed */
    ck_assert_int_eq(frame(two + n, strlen(two) - n, &n), 1);
    ck_assert_uint_eq(n, strlen(FRAME_OPTIONS));
    /* any part of the second message after the first: still the first */
    for (k = strlen(FRAME_INVITE); k <= strlen(two); k++) {
        n = 0;
        ck_assert_int_eq(frame(two, k, &n), 1);
        ck_assert_uint_eq(n, strlen(FRAME_INVITE));
    }
}
END_TEST

START_TEST(frame_compact_content_length)
{
    const char *m = "MESSAGE sip:bob@example.com SIP/2.0\r\n"
                    "v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK3\r\n"
                    "c: text/plain\r\n"
                    "l: 5\r\n"
                    "\r\n"
                    "helloEXTRA";
    apr_size_t n = 0;

    ck_assert_int_eq(frame(m, strlen(m), &n), 1);
    ck_assert_uint_eq(n, strlen(m) - strlen("EXTRA"));
    /* "L :" (case, space before the colon) is the same header */
    m = "MESSAGE sip:bob@example.com SIP/2.0\r\nL : 3\r\n\r\nabcdef";
    ck_assert_int_eq(frame(m, strlen(m), &n), 1);
    ck_assert_uint_eq(n, strlen(m) - 3);
    /* short body: more needed */
    ck_assert_int_eq(frame(m, strlen(m) - 4, &n), 0);
}
END_TEST

START_TEST(frame_no_content_length)
{
    const char *m = "OPTIONS sip:bob@example.com SIP/2.0\r\n"
                    "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK4\r\n"
                    "\r\n"
                    "NEXT STUFF";
    apr_size_t n = 0;

    /* RFC 3261 §18.3: no framing without it; the header is there for the 400 */
    ck_assert_int_eq(frame(m, strlen(m), &n), -3);
    ck_assert_uint_eq(n, strlen(m) - strlen("NEXT STUFF"));
    /* not before the header is complete */
    ck_assert_int_eq(frame(m, strlen(m) - strlen("\r\nNEXT STUFF"), &n), 0);
}
END_TEST

START_TEST(frame_bad_content_length)
{
    static const char *const bad[] = {"abc", "-1", "-0", "+5", "5x", "1 2", "", "0x10",
                                      "123456789012345678901234567890"};
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *m = apr_pstrcat(pool, "OPTIONS sip:bob@example.com SIP/2.0\r\n"
                                    "Content-Length: ", bad[i], "\r\n\r\n", NULL);
        apr_size_t n = 0;
        int r = frame(m, strlen(m), &n);
        ck_assert_msg(r == -2, "Content-Length '%s' gave %d, expected -2", bad[i], r);
        ck_assert_uint_gt(n, 0);
        ck_assert_uint_le(n, strlen(m));
    }
}
END_TEST

/* sip_transport.h: "-2 when Content-Length is unusable or above max_body
 * (*msg_len = header length)".  The receiver answers 400 from those bytes
 * (SIP_TP_FRAMING_LOST), so they must hold the whole header. */
START_TEST(frame_bad_content_length_reports_header_length)
{
    const char *hdr = "OPTIONS sip:bob@example.com SIP/2.0\r\n"
                      "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK5\r\n"
                      "Content-Length: abc\r\n"
                      "Call-ID: after-the-length@192.0.2.1\r\n"
                      "CSeq: 1 OPTIONS\r\n"
                      "\r\n";
    apr_size_t n = 0;

    ck_assert_int_eq(frame(hdr, strlen(hdr), &n), -2);
    ck_assert_msg(n == strlen(hdr),
                  "*msg_len is %zu, the header is %zu bytes: the error answer would lose "
                  "Call-ID and CSeq", n, strlen(hdr));
}
END_TEST

START_TEST(frame_body_over_max)
{
    const char *m = "MESSAGE sip:bob@example.com SIP/2.0\r\n"
                    "Content-Type: text/plain\r\n"
                    "Content-Length: 101\r\n"
                    "\r\n";
    apr_size_t n = 0;

    ck_assert_int_eq(sip_stream_frame(m, strlen(m), MAXH, 100, &n), -2);
    ck_assert_uint_eq(n, strlen(m));
    /* exactly max_body is fine */
    m = "MESSAGE sip:bob@example.com SIP/2.0\r\nContent-Length: 100\r\n\r\n";
    ck_assert_int_eq(sip_stream_frame(m, strlen(m), MAXH, 100, &n), 0);
}
END_TEST

START_TEST(frame_header_over_max)
{
    char buf[600];
    apr_size_t n = 0, len;
    int i;

    strcpy(buf, "OPTIONS sip:bob@example.com SIP/2.0\r\n");
    for (i = 0; i < 20; i++)
        strcat(buf, "X-Filler: 0123456789\r\n");
    len = strlen(buf);
    ck_assert_uint_gt(len, 256);
    ck_assert_int_eq(sip_stream_frame(buf, len, 256, MAXB, &n), -1);
    ck_assert_uint_gt(n, 256);
    ck_assert_uint_le(n, len);
    /* one long line without any newline at all */
    memset(buf, 'A', 300);
    ck_assert_int_eq(sip_stream_frame(buf, 300, 256, MAXB, &n), -1);
    ck_assert_uint_eq(n, 300);
    /* below the limit: just more needed */
    ck_assert_int_eq(sip_stream_frame(buf, 200, 256, MAXB, &n), 0);
}
END_TEST

/* A header of exactly max_header bytes does not exceed the limit, so no
 * prefix of such a message may be refused: TCP can deliver it cut between
 * the CR and the LF of the blank line. */
START_TEST(frame_header_exactly_max_split)
{
    const char *m = "OPTIONS sip:bob@example.com SIP/2.0\r\n"
                    "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK6\r\n"
                    "Content-Length: 0\r\n"
                    "\r\n";
    apr_size_t hdr = strlen(m) - 2, len = strlen(m), k, n = 0;

    ck_assert_int_eq(sip_stream_frame(m, len, hdr, MAXB, &n), 1);
    ck_assert_uint_eq(n, len);
    for (k = 0; k < len; k++) {
        char *prefix = exact(m, k);
        int r = sip_stream_frame(prefix, k, hdr, MAXB, &n);
        free(prefix);
        ck_assert_msg(r == 0, "max_header %zu = header size: prefix of %zu bytes gave %d, "
                      "expected 0", hdr, k, r);
    }
}
END_TEST

START_TEST(frame_lf_only)
{
    const char *m = "MESSAGE sip:bob@example.com SIP/2.0\n"
                    "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK7\n"
                    "Content-Type: text/plain\n"
                    "Content-Length: 3\n"
                    "\n"
                    "abcOPTIONS";
    apr_size_t n = 0;

    ck_assert_int_eq(frame(m, strlen(m), &n), 1);
    ck_assert_uint_eq(n, strlen(m) - strlen("OPTIONS"));
    ck_assert_int_eq(frame(m, strlen(m) - strlen("OPTIONS") - 1, &n), 0);
}
END_TEST

static Suite *frame_suite(void)
{
    Suite *s = suite_create("sip_stream_frame");
    TCase *tc = tcase_create("frame");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, frame_complete_with_body);
    tcase_add_test(tc, frame_every_split_point);
    tcase_add_test(tc, frame_pipelined);
    tcase_add_test(tc, frame_compact_content_length);
    tcase_add_test(tc, frame_no_content_length);
    tcase_add_test(tc, frame_bad_content_length);
    tcase_add_test(tc, frame_bad_content_length_reports_header_length);
    tcase_add_test(tc, frame_body_over_max);
    tcase_add_test(tc, frame_header_over_max);
    tcase_add_test(tc, frame_header_exactly_max_split);
    tcase_add_test(tc, frame_lf_only);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 2. sip_cgi_split (RFC 3050 §5.6 delimiting rules)                   */

typedef struct {
    int r;
    apr_size_t skip, len;
    const char *why;
} split_t;

static split_t split(const char *buf, int eof)
{
    split_t s = {0, 9999, 9999, NULL};
    s.r = sip_cgi_split(buf, strlen(buf), eof, &s.skip, &s.len, &s.why);
    return s;
}

START_TEST(split_rule2_no_content_type)
{
    const char *head = "SIP/2.0 486 Busy Here\r\nX-Reason: busy\r\n\r\n";
    const char *out = apr_pstrcat(pool, head, "this is not a body\r\n", NULL);
    split_t s;

    s = split(out, 0);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.skip, 0);
    ck_assert_uint_eq(s.len, strlen(head));
    s = split(out, 1);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(head));
}
END_TEST

START_TEST(split_rule2_content_length_zero)
{
    const char *head = "SIP/2.0 200 OK\r\nContent-Type: application/sdp\r\n"
                       "Content-Length: 0\r\n\r\n";
    const char *out = apr_pstrcat(pool, head, "SIP/2.0 200 OK\r\n", NULL);
    split_t s = split(out, 0);

    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(head));
}
END_TEST

START_TEST(split_rule3_exact_body)
{
    const char *msg = "SIP/2.0 200 OK\r\nContent-Type: text/plain\r\n"
                      "Content-Length: 12\r\n\r\nhello\r\n\r\nbye";
    const char *out = apr_pstrcat(pool, msg, "\r\nSIP/2.0 180 Ringing\r\n\r\n", NULL);
    split_t s;

    s = split(out, 0);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(msg));
    /* compact forms c: and l: */
    msg = "SIP/2.0 200 OK\nc: text/plain\nl: 3\n\nabc";
    out = apr_pstrcat(pool, msg, "def", NULL);
    s = split(out, 1);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(msg));
}
END_TEST

START_TEST(split_rule3_incomplete_body)
{
    const char *out = "SIP/2.0 200 OK\r\nContent-Type: text/plain\r\n"
                      "Content-Length: 20\r\n\r\nonly ten..";
    split_t s;

    s = split(out, 0);
    ck_assert_int_eq(s.r, 0);
    s = split(out, 1);
    ck_assert_int_eq(s.r, -1);
    ck_assert_ptr_nonnull(s.why);
}
END_TEST

START_TEST(split_rule4_body_to_eof)
{
    const char *out = "SIP/2.0 200 OK\nContent-Type: application/sdp\n\nv=0\n"
                      "o=- 1 1 IN IP4 192.0.2.1\n\nSIP/2.0 200 OK\n\n";
    split_t s;

    s = split(out, 0);
    ck_assert_int_eq(s.r, 0);
    s = split(out, 1);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.skip, 0);
    ck_assert_uint_eq(s.len, strlen(out));
}
END_TEST

START_TEST(split_rule5_length_without_type)
{
    split_t s = split("SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0);

    ck_assert_int_eq(s.r, -1);
    ck_assert_ptr_nonnull(s.why);
    s = split("SIP/2.0 200 OK\r\nl: 5\r\n\r\nhello", 1);
    ck_assert_int_eq(s.r, -1);
}
END_TEST

START_TEST(split_bad_content_length)
{
    split_t s = split("SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: x\n\nabc", 1);
    ck_assert_int_eq(s.r, -1);
    s = split("SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: -3\n\nabc", 1);
    ck_assert_int_eq(s.r, -1);
    s = split("SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: 3z\n\nabc", 1);
    ck_assert_int_eq(s.r, -1);
}
END_TEST

START_TEST(split_skips_leading_blank_lines)
{
    const char *msg = "SIP/2.0 180 Ringing\r\n\r\n";
    const char *out = apr_pstrcat(pool, "\r\n\n\r\n", msg, NULL);
    split_t s = split(out, 0);

    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.skip, 5);
    ck_assert_uint_eq(s.len, strlen(msg));
    /* only blank lines: nothing yet, all of it skippable */
    s = split("\n\r\n\n", 1);
    ck_assert_int_eq(s.r, 0);
    ck_assert_uint_eq(s.skip, 4);
    s = split("", 1);
    ck_assert_int_eq(s.r, 0);
    ck_assert_uint_eq(s.skip, 0);
}
END_TEST

START_TEST(split_lf_and_crlf)
{
    const char *lf = "SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: 4\n\nab\ncd";
    const char *crlf = "SIP/2.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nab\ncd";
    split_t s;

    s = split(lf, 0);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(lf) - 1);
    s = split(crlf, 0);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(crlf) - 1);
}
END_TEST

START_TEST(split_last_message_without_blank_line)
{
    const char *out = "SIP/2.0 486 Busy Here\nX-Reason: busy\n";
    split_t s;

    s = split(out, 0);
    ck_assert_int_eq(s.r, 0);
    s = split(out, 1);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen(out));
    /* not even a final newline */
    s = split("SIP/2.0 486 Busy Here", 1);
    ck_assert_int_eq(s.r, 1);
    ck_assert_uint_eq(s.len, strlen("SIP/2.0 486 Busy Here"));
}
END_TEST

START_TEST(split_two_messages)
{
    const char *m1 = "SIP/2.0 180 Ringing\n\n";
    const char *m2 = "SIP/2.0 200 OK\nContent-Type: application/sdp\nContent-Length: 4\n\nv=0\n";
    const char *out = apr_pstrcat(pool, m1, "\n", m2, NULL);
    apr_size_t len = strlen(out), pos = 0, skip, mlen;
    const char *why = NULL;

    ck_assert_int_eq(sip_cgi_split(out, len, 0, &skip, &mlen, &why), 1);
    ck_assert_uint_eq(skip, 0);
    ck_assert_uint_eq(mlen, strlen(m1));
    ck_assert_int_eq(strncmp(out, "SIP/2.0 180 ", 12), 0);
    pos = skip + mlen;
    ck_assert_int_eq(sip_cgi_split(out + pos, len - pos, 0, &skip, &mlen, &why), 1);
    ck_assert_uint_eq(skip, 1);
    ck_assert_uint_eq(mlen, strlen(m2));
    ck_assert_mem_eq(out + pos + skip, m2, strlen(m2));
    pos += skip + mlen;
    ck_assert_uint_eq(pos, len);
    /* the 200 arriving a byte at a time: nothing until its body is complete */
    {
        apr_size_t start = strlen(m1) + 1, k;
        for (k = start; k < len; k++) {
            char *prefix = exact(out + start, k - start);
            int r = sip_cgi_split(prefix, k - start, 0, &skip, &mlen, &why);
            free(prefix);
            ck_assert_msg(r == 0, "prefix %zu gave %d", k - start, r);
        }
    }
}
END_TEST

static Suite *split_suite(void)
{
    Suite *s = suite_create("sip_cgi_split");
    TCase *tc = tcase_create("split");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, split_rule2_no_content_type);
    tcase_add_test(tc, split_rule2_content_length_zero);
    tcase_add_test(tc, split_rule3_exact_body);
    tcase_add_test(tc, split_rule3_incomplete_body);
    tcase_add_test(tc, split_rule4_body_to_eof);
    tcase_add_test(tc, split_rule5_length_without_type);
    tcase_add_test(tc, split_bad_content_length);
    tcase_add_test(tc, split_skips_leading_blank_lines);
    tcase_add_test(tc, split_lf_and_crlf);
    tcase_add_test(tc, split_last_message_without_blank_line);
    tcase_add_test(tc, split_two_messages);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 3. sip_cgi_name_ok                                                  */

START_TEST(name_ok_accepts)
{
    char longest[NAME_MAX + 1];

    ck_assert_int_eq(sip_cgi_name_ok("alice@example.com"), 1);
    ck_assert_int_eq(sip_cgi_name_ok("default.cgi"), 1);
    ck_assert_int_eq(sip_cgi_name_ok("a..b"), 1);
    ck_assert_int_eq(sip_cgi_name_ok("x"), 1);
    memset(longest, 'n', NAME_MAX);
    longest[NAME_MAX] = '\0';
    ck_assert_int_eq(sip_cgi_name_ok(longest), 1);
}
END_TEST

START_TEST(name_ok_rejects)
{
    static const char *const bad[] = {
        "", ".", "..", ".hidden", "../etc", "a/b", "/etc", "a\\b", "a\tb", "a\nb",
        "a\rb", "\x01", "a\x1f", "a\x7f", "...",
    };
    char toolong[NAME_MAX + 2];
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(sip_cgi_name_ok(bad[i]) == 0, "'%s' accepted", bad[i]);
    ck_assert_int_eq(sip_cgi_name_ok(NULL), 0);
    memset(toolong, 'n', NAME_MAX + 1);
    toolong[NAME_MAX + 1] = '\0';
    ck_assert_int_eq(sip_cgi_name_ok(toolong), 0);
}
END_TEST

static Suite *name_suite(void)
{
    Suite *s = suite_create("sip_cgi_name_ok");
    TCase *tc = tcase_create("name_ok");

    tcase_add_test(tc, name_ok_accepts);
    tcase_add_test(tc, name_ok_rejects);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 4. sip_cgi_locate                                                   */

static char tmpdir[PATH_MAX], realtmp[PATH_MAX], siblingdir[PATH_MAX + 16];

static void write_file(const char *dir, const char *name, mode_t mode)
{
    char path[PATH_MAX * 2];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("#!/bin/sh\necho 'SIP/2.0 200 OK'\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static void symlink_in(const char *dir, const char *name, const char *target)
{
    char path[PATH_MAX * 2];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ck_assert_int_eq(symlink(target, path), 0);
}

/* Unchecked fixture: runs once in the runner process, so the directory is
 * removed even when a test fails in its forked child. */
static void locate_setup(void)
{
    char path[PATH_MAX * 2];
    const char *base = getenv("TMPDIR");

    snprintf(tmpdir, sizeof(tmpdir), "%s/sip_unit_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    ck_assert_ptr_nonnull(realpath(tmpdir, realtmp));
    /* a sibling whose name starts with the directory's name */
    snprintf(siblingdir, sizeof(siblingdir), "%s-evil", tmpdir);
    ck_assert_int_eq(mkdir(siblingdir, 0755), 0);
    write_file(siblingdir, "evil@h", 0755);

    write_file(tmpdir, "alice@h", 0755);
    write_file(tmpdir, "default.cgi", 0755);
    write_file(tmpdir, "noexec@h", 0644);
    snprintf(path, sizeof(path), "%s/dir@h", tmpdir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    symlink_in(tmpdir, "out@h", "/bin/sh");
    snprintf(path, sizeof(path), "%s/evil@h", siblingdir);
    symlink_in(tmpdir, "sibling@h", path);
    symlink_in(tmpdir, "in@h", "alice@h");
    symlink_in(tmpdir, "dangling@h", "no-such-file");
}

static void locate_teardown(void)
{
    char cmd[PATH_MAX * 3];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", tmpdir, siblingdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static int locate(const char *def, const char *user, const char *host, const char **path,
                  const char **why)
{
    *path = NULL;
    *why = NULL;
    return sip_cgi_locate(pool, tmpdir, def, user, host, path, why);
}

static const char *in_dir(const char *name)
{
    return apr_pstrcat(pool, realtmp, "/", name, NULL);
}

START_TEST(locate_user_script)
{
    const char *path, *why;

    ck_assert_int_eq(locate("default.cgi", "alice", "h", &path, &why), 0);
    ck_assert_str_eq(path, in_dir("alice@h"));
}
END_TEST

START_TEST(locate_default_script)
{
    const char *path, *why;

    ck_assert_int_eq(locate("default.cgi", "bob", "h", &path, &why), 0);
    ck_assert_str_eq(path, in_dir("default.cgi"));
    /* alice exists for host h only */
    ck_assert_int_eq(locate("default.cgi", "alice", "other", &path, &why), 0);
    ck_assert_str_eq(path, in_dir("default.cgi"));
    ck_assert_int_eq(locate("default.cgi", NULL, "h", &path, &why), 0);
    ck_assert_str_eq(path, in_dir("default.cgi"));
    ck_assert_int_eq(locate("default.cgi", "", "h", &path, &why), 0);
    ck_assert_str_eq(path, in_dir("default.cgi"));
}
END_TEST

START_TEST(locate_nothing)
{
    const char *path, *why;

    ck_assert_int_eq(locate("missing.cgi", "bob", "h", &path, &why), 404);
    ck_assert_ptr_nonnull(why);
    ck_assert_int_eq(locate(NULL, "bob", "h", &path, &why), 404);
    ck_assert_int_eq(locate(NULL, NULL, NULL, &path, &why), 404);
    /* an unusable default script name is not looked up */
    ck_assert_int_eq(locate("../default.cgi", "bob", "h", &path, &why), 404);
    /* no directory at all */
    ck_assert_int_eq(sip_cgi_locate(pool, "/nonexistent/sip-dir", "default.cgi", "alice", "h",
                                    &path, &why), 404);
    ck_assert_int_eq(sip_cgi_locate(pool, NULL, "default.cgi", "alice", "h", &path, &why), 404);
}
END_TEST

START_TEST(locate_forbidden_files)
{
    const char *path, *why;

    /* none of these may fall back to the default script */
    ck_assert_int_eq(locate("default.cgi", "noexec", "h", &path, &why), 403);
    ck_assert_ptr_null(path);
    ck_assert_int_eq(locate("default.cgi", "dir", "h", &path, &why), 403);
    ck_assert_ptr_null(path);
    ck_assert_int_eq(locate("default.cgi", "out", "h", &path, &why), 403);
    ck_assert_ptr_null(path);
    ck_assert_int_eq(locate("default.cgi", "sibling", "h", &path, &why), 403);
    ck_assert_ptr_null(path);
    ck_assert_int_eq(locate("default.cgi", "dangling", "h", &path, &why), 403);
    ck_assert_ptr_null(path);
    ck_assert_ptr_nonnull(why);
}
END_TEST

START_TEST(locate_symlink_inside)
{
    const char *path, *why;

    ck_assert_int_eq(locate("default.cgi", "in", "h", &path, &why), 0);
    ck_assert_str_eq(path, in_dir("alice@h"));
}
END_TEST

START_TEST(locate_escaped_names)
{
    static const char *const users[] = {"..%2Fetc", "a%2Fb", "a%2fb", "%2e%2e", "%2E%2E",
                                        "a%00b", "%2e", "a%5Cb", "a%0ab", "a%zz", "a%2",
                                        "%2ehidden"};
    apr_size_t i;

    for (i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        const char *path, *why;
        int r = locate("default.cgi", users[i], "h", &path, &why);
        ck_assert_msg(r == 403, "user '%s' gave %d (path %s), expected 403", users[i], r,
                      path ? path : "none");
    }
    {
        const char *path, *why;
        /* a host part with a slash is no file name either */
        ck_assert_int_eq(locate("default.cgi", "alice", "../h", &path, &why), 403);
        /* a harmless escape is decoded and the script found */
        ck_assert_int_eq(locate("default.cgi", "%61lice", "h", &path, &why), 0);
        ck_assert_str_eq(path, in_dir("alice@h"));
    }
}
END_TEST

/* The pieces the routing steps use (sip_dispatch.c): a CPL file needs to
 * be readable, not executable, and obeys the same confinement. */
START_TEST(locate_cpl_files)
{
    const char *path = NULL, *why = NULL, *name = NULL;
    char longuser[300];

    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "noexec@h", 0, &path, &why), 0);
    ck_assert_str_eq(path, in_dir("noexec@h"));
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "noexec@h", 1, &path, &why), 403);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "out@h", 0, &path, &why), 403);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "sibling@h", 0, &path, &why), 403);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "dangling@h", 0, &path, &why), 403);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "dir@h", 0, &path, &why), 403);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "in@h", 0, &path, &why), 0);
    ck_assert_str_eq(path, in_dir("alice@h"));
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "missing.cpl", 0, &path, &why), 404);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, "../x.cpl", 0, &path, &why), 404);
    ck_assert_int_eq(sip_cgi_locate_file(pool, tmpdir, ".hidden.cpl", 0, &path, &why), 404);
    ck_assert_int_eq(sip_cgi_locate_file(pool, "/nonexistent/sip-dir", "x.cpl", 0, &path, &why),
                     404);

    ck_assert_int_eq(sip_cgi_user_file(pool, "%61lice", "h", ".cpl", &name, &why), 0);
    ck_assert_str_eq(name, "alice@h.cpl");
    ck_assert_int_eq(sip_cgi_user_file(pool, "..%2Fetc", "h", ".cpl", &name, &why), 403);
    ck_assert_int_eq(sip_cgi_user_file(pool, "alice", "../h", ".cpl", &name, &why), 403);
    ck_assert_int_eq(sip_cgi_user_file(pool, "a%00b", "h", "", &name, &why), 403);
    ck_assert_int_eq(sip_cgi_user_file(pool, NULL, "h", ".cpl", &name, &why), 404);
    ck_assert_int_eq(sip_cgi_user_file(pool, "", "h", ".cpl", &name, &why), 404);
    /* no file can have a name this long: not found rather than refused */
    memset(longuser, 'a', sizeof(longuser) - 1);
    longuser[sizeof(longuser) - 1] = '\0';
    ck_assert_int_eq(sip_cgi_user_file(pool, longuser, "h", ".cpl", &name, &why), 404);
}
END_TEST

static Suite *locate_suite(void)
{
    Suite *s = suite_create("sip_cgi_locate");
    TCase *tc = tcase_create("locate");

    tcase_add_unchecked_fixture(tc, locate_setup, locate_teardown);
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, locate_user_script);
    tcase_add_test(tc, locate_default_script);
    tcase_add_test(tc, locate_nothing);
    tcase_add_test(tc, locate_forbidden_files);
    tcase_add_test(tc, locate_symlink_inside);
    tcase_add_test(tc, locate_escaped_names);
    tcase_add_test(tc, locate_cpl_files);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 5. sip_msg_parse                                                    */

static const sip_limits_t LIM = {8190, 8190, 100, 65536};

/* The lines of a valid OPTIONS; tests drop or replace some of them. */
static const char *const OPTIONS_LINES[] = {
    "OPTIONS sip:alice@example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123",
    "v: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKdef456",
    "Max-Forwards: 70",
    "f: \"Bob\" <sip:bob@example.org>;tag=ft1",
    "t: <sip:alice@example.com>",
    "i: callid-1@192.0.2.1",
    "CSeq: 42 OPTIONS",
    "X-Folded: part one",
    "  \tpart two",
    "Content-Length: 0",
    NULL
};

/* The text of a message made of 'lines' (CRLF), a blank line and 'body'. */
static const char *build(const char *const *lines, const char *body)
{
    apr_array_header_t *parts = apr_array_make(pool, 16, sizeof(const char *));
    int i;

    for (i = 0; lines[i]; i++) {
        *(const char **)apr_array_push(parts) = lines[i];
        *(const char **)apr_array_push(parts) = "\r\n";
    }
    *(const char **)apr_array_push(parts) = "\r\n";
    if (body)
        *(const char **)apr_array_push(parts) = body;
    return apr_array_pstrcat(pool, parts, 0);
}

/* 'text' with every line before the blank line that starts with 'prefix'
 * replaced by 'repl' (removed when 'repl' is NULL). */
static const char *edit(const char *text, const char *prefix, const char *repl)
{
    apr_array_header_t *parts = apr_array_make(pool, 16, sizeof(const char *));
    const char *pos = text;
    int found = 0;

    for (;;) {
        const char *eol = strstr(pos, "\r\n");
        if (!eol || eol == pos)
            break;
        if (strncmp(pos, prefix, strlen(prefix)) == 0) {
            found = 1;
            if (repl) {
                *(const char **)apr_array_push(parts) = repl;
                *(const char **)apr_array_push(parts) = "\r\n";
            }
        }
        else
            *(const char **)apr_array_push(parts) = apr_pstrmemdup(pool, pos, eol + 2 - pos);
        pos = eol + 2;
    }
    ck_assert_msg(found, "no line starting with '%s' to edit", prefix);
    *(const char **)apr_array_push(parts) = pos;
    return apr_array_pstrcat(pool, parts, 0);
}

#define OPTIONS_TEXT() build(OPTIONS_LINES, NULL)

static int parse_status(const char *text, const sip_limits_t *lim, int datagram,
                        sip_msg_t **m, const char **reason)
{
    sip_msg_error_t err = {-1, NULL};
    sip_msg_t *msg = NULL;
    apr_status_t rv = sip_msg_parse(pool, text, strlen(text), lim, datagram, &msg, &err);

    if (m)
        *m = msg;
    if (reason)
        *reason = err.reason;
    if (rv == APR_SUCCESS)
        return 0;
    ck_assert_msg(err.status >= 0, "failure without a status");
    return err.status;
}

START_TEST(parse_valid_options)
{
    const char *text = OPTIONS_TEXT();
    sip_msg_t *m;
    const char *reason;
    const apr_array_header_t *h;
    apr_size_t blen = 99;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 0);
    ck_assert_int_eq(sip_msg_is_request(m), 1);
    ck_assert_str_eq(sip_msg_method(m), "OPTIONS");
    ck_assert_str_eq(sip_msg_request_uri(m), "sip:alice@example.com");
    ck_assert_str_eq(sip_msg_version(m), "SIP/2.0");
    ck_assert_str_eq(sip_msg_uri_user(m), "alice");
    ck_assert_str_eq(sip_msg_uri_host(m), "example.com");
    ck_assert_str_eq(sip_msg_branch(m), "z9hG4bKabc123");
    ck_assert_str_eq(sip_msg_via_sent_by(m), "192.0.2.1:5060");
    ck_assert_str_eq(sip_msg_call_id(m), "callid-1@192.0.2.1");
    ck_assert_str_eq(sip_msg_cseq_number(m), "42");
    ck_assert_str_eq(sip_msg_cseq_method(m), "OPTIONS");
    ck_assert_str_eq(sip_msg_from_tag(m), "ft1");
    ck_assert_ptr_null(sip_msg_to_tag(m));
    ck_assert_ptr_null(sip_msg_body(m, &blen));
    ck_assert_uint_eq(blen, 0);

    h = sip_msg_headers(m);
    ck_assert_int_eq(h->nelts, 9);
#define HDR(i) (&APR_ARRAY_IDX(h, i, sip_header_t))
    ck_assert_str_eq(HDR(0)->name, "Via");
    ck_assert_str_eq(HDR(0)->value, "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123");
    ck_assert_str_eq(HDR(1)->name, "Via");
    ck_assert_str_eq(HDR(1)->value, "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKdef456");
    ck_assert_str_eq(HDR(2)->name, "Max-Forwards");
    ck_assert_str_eq(HDR(2)->value, "70");
    ck_assert_str_eq(HDR(3)->name, "From");
    ck_assert_str_eq(HDR(3)->value, "\"Bob\" <sip:bob@example.org>;tag=ft1");
    ck_assert_str_eq(HDR(4)->name, "To");
    ck_assert_str_eq(HDR(4)->value, "<sip:alice@example.com>");
    ck_assert_str_eq(HDR(5)->name, "Call-ID");
    ck_assert_str_eq(HDR(5)->value, "callid-1@192.0.2.1");
    ck_assert_str_eq(HDR(6)->name, "CSeq");
    ck_assert_str_eq(HDR(6)->value, "42 OPTIONS");
    ck_assert_str_eq(HDR(7)->name, "X-Folded");
    ck_assert_str_eq(HDR(7)->value, "part one part two");
    ck_assert_str_eq(HDR(8)->name, "Content-Length");
    ck_assert_str_eq(HDR(8)->value, "0");
#undef HDR
    ck_assert_str_eq(sip_msg_header(m, "call-id"), "callid-1@192.0.2.1");
    ck_assert_str_eq(sip_msg_header(m, "VIA"), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123");
    ck_assert_ptr_null(sip_msg_header(m, "i"));
    ck_assert_ptr_null(sip_msg_header(m, "Contact"));
}
END_TEST

START_TEST(parse_body)
{
    static const char *const lines[] = {
        "MESSAGE sip:alice@example.com SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKm1",
        "Max-Forwards: 70",
        "From: <sip:bob@example.org>;tag=a",
        "To: <sip:alice@example.com>",
        "Call-ID: m1",
        "CSeq: 1 MESSAGE",
        "c: text/plain",
        "l: 5",
        NULL
    };
    const char *text = build(lines, "hello trailing junk");
    sip_msg_t *m;
    apr_size_t blen = 0;
    const char *body;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, NULL), 0);
    body = sip_msg_body(m, &blen);
    ck_assert_uint_eq(blen, 5);
    ck_assert_mem_eq(body, "hello", 5);
    ck_assert_str_eq(sip_msg_content_type(m), "text/plain");
    /* a stream message without Content-Length: 400 (RFC 3261 §18.3, §20.14) */
    text = edit(build(lines, ""), "l:", NULL);
    ck_assert_int_eq(parse_status(text, &LIM, 0, &m, NULL), 400);
    /* ... but a text of our own (no limits: not received) has no body */
    ck_assert_int_eq(parse_status(text, NULL, 0, &m, NULL), 0);
    ck_assert_ptr_null(sip_msg_body(m, &blen));
}
END_TEST

START_TEST(parse_missing_mandatory)
{
    static const char *const drop[] = {"Via", "f:", "t:", "i:", "CSeq:", "Max-Forwards:"};
    apr_size_t i;

    for (i = 0; i < sizeof(drop) / sizeof(drop[0]); i++) {
        const char *text = OPTIONS_TEXT(), *reason;
        int st;

        if (strcmp(drop[i], "Via") == 0)
            text = edit(edit(text, "Via:", NULL), "v:", NULL);
        else
            text = edit(text, drop[i], NULL);
        st = parse_status(text, &LIM, 1, NULL, &reason);
        ck_assert_msg(st == 400, "without %s: status %d (%s), expected 400", drop[i], st,
                      reason);
    }
}
END_TEST

START_TEST(parse_version_not_supported)
{
    const char *text = edit(OPTIONS_TEXT(), "OPTIONS ", "OPTIONS sip:alice@example.com SIP/3.0");
    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 505);
}
END_TEST

START_TEST(parse_bad_cseq)
{
    static const char *const bad[] = {"CSeq: 1 INVITE", "CSeq: abc OPTIONS", "CSeq: -1 OPTIONS",
                                      "CSeq: 4294967296 OPTIONS", "CSeq: 1x OPTIONS",
                                      "CSeq: 1 options"};
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *reason = NULL;
        int st = parse_status(edit(OPTIONS_TEXT(), "CSeq:", bad[i]), &LIM, 1, NULL, &reason);
        ck_assert_msg(st == 400, "'%s' gave %d (%s), expected 400", bad[i], st, reason);
    }
    /* the largest allowed number */
    ck_assert_int_eq(parse_status(edit(OPTIONS_TEXT(), "CSeq:", "CSeq: 2147483647 OPTIONS"),
                                  &LIM, 1, NULL, NULL), 0);
}
END_TEST

START_TEST(parse_bad_max_forwards)
{
    static const char *const bad[] = {"Max-Forwards: abc", "Max-Forwards: 256",
                                      "Max-Forwards: -1", "Max-Forwards: 7x"};
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = parse_status(edit(OPTIONS_TEXT(), "Max-Forwards:", bad[i]), &LIM, 1, NULL, NULL);
        ck_assert_msg(st == 400, "'%s' gave %d, expected 400", bad[i], st);
    }
    ck_assert_int_eq(parse_status(edit(OPTIONS_TEXT(), "Max-Forwards:", "Max-Forwards: 0"),
                                  &LIM, 1, NULL, NULL), 0);
}
END_TEST

START_TEST(parse_content_length_checks)
{
    const char *text = edit(build(OPTIONS_LINES, "abc"), "Content-Length:", "Content-Length: 10");
    sip_limits_t small = LIM;
    char *big;

    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 400);
    text = edit(OPTIONS_TEXT(), "Content-Length:", "Content-Length: x");
    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 400);

    small.body = 100;
    big = apr_palloc(pool, 201);
    memset(big, 'b', 200);
    big[200] = '\0';
    text = edit(build(OPTIONS_LINES, big), "Content-Length:", "Content-Length: 200");
    ck_assert_int_eq(parse_status(text, &small, 1, NULL, NULL), 413);
    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 0);
    /* a datagram without Content-Length: the rest is the body */
    text = edit(build(OPTIONS_LINES, big), "Content-Length:", NULL);
    ck_assert_int_eq(parse_status(text, &small, 1, NULL, NULL), 413);
    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 0);
}
END_TEST

START_TEST(parse_limits)
{
    sip_limits_t lim = LIM;
    char uri[200], line[200];
    const char *text, *rest;
    int i;

    /* request line longer than 'line' */
    strcpy(uri, "OPTIONS sip:");
    for (i = 0; i < 10; i++)
        strcat(uri, "0123456789");
    strcat(uri, "@example.com SIP/2.0");
    text = edit(OPTIONS_TEXT(), "OPTIONS ", uri);
    lim.line = 64;
    ck_assert_int_eq(parse_status(text, &lim, 1, NULL, NULL), 414);
    lim.line = (int)strlen(uri);
    ck_assert_int_eq(parse_status(text, &lim, 1, NULL, NULL), 0);

    /* a header longer than 'fieldsize' */
    lim = LIM;
    lim.fieldsize = 100;
    rest = strstr(OPTIONS_TEXT(), "\r\n") + 2;
    strcpy(line, "X-Long: ");
    memset(line + 8, 'x', 150);
    line[158] = '\0';
    text = apr_pstrcat(pool, "OPTIONS sip:alice@example.com SIP/2.0\r\n", line, "\r\n", rest,
                       NULL);
    ck_assert_int_eq(parse_status(text, &lim, 1, NULL, NULL), 400);
    /* ... also when it only gets long through a continuation line */
    text = apr_pstrcat(pool, "OPTIONS sip:alice@example.com SIP/2.0\r\nX-Long: ", line + 100,
                       "\r\n ", line + 100, "\r\n", rest, NULL);
    ck_assert_int_eq(parse_status(text, &lim, 1, NULL, NULL), 400);
    lim.fieldsize = 200;
    ck_assert_int_eq(parse_status(text, &lim, 1, NULL, NULL), 0);

    /* more header fields than 'fields' (9 in OPTIONS_LINES; a folded one
     * counts once) */
    lim = LIM;
    lim.fields = 8;
    ck_assert_int_eq(parse_status(OPTIONS_TEXT(), &lim, 1, NULL, NULL), 400);
    lim.fields = 9;
    ck_assert_int_eq(parse_status(OPTIONS_TEXT(), &lim, 1, NULL, NULL), 0);
}
END_TEST

static const char *const RESPONSE_LINES[] = {
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123",
    "From: <sip:bob@example.org>;tag=ft1",
    "To: <sip:alice@example.com>;tag=tt1",
    "Call-ID: resp-1",
    "CSeq: 42 OPTIONS",
    "Content-Length: 0",
    NULL
};

START_TEST(parse_responses_dropped)
{
    sip_msg_t *m;
    const char *text = build(RESPONSE_LINES, NULL);

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, NULL), 0);
    ck_assert_int_eq(sip_msg_is_request(m), 0);
    ck_assert_int_eq(sip_msg_status(m), 200);
    ck_assert_str_eq(sip_msg_reason(m), "OK");
    ck_assert_str_eq(sip_msg_to_tag(m), "tt1");
    /* broken responses are never answered (status 0), but still refused */
    ck_assert_int_eq(parse_status(edit(text, "Call-ID:", NULL), &LIM, 1, NULL, NULL), 0);
    ck_assert_int_eq(parse_status(edit(text, "Via:", NULL), &LIM, 1, NULL, NULL), 0);
    ck_assert_int_eq(parse_status(edit(text, "CSeq:", NULL), &LIM, 1, NULL, NULL), 0);
    ck_assert_int_eq(parse_status(edit(text, "Content-Length:", "Content-Length: 9"), &LIM, 1,
                                  NULL, NULL), 0);
    {
        sip_msg_error_t err = {-1, NULL};
        const char *bad = edit(text, "Call-ID:", NULL);
        ck_assert_int_ne(sip_msg_parse(pool, bad, strlen(bad), &LIM, 1, &m, &err), APR_SUCCESS);
        ck_assert_int_eq(err.status, 0);
    }
}
END_TEST

START_TEST(parse_garbage)
{
    static const char *const junk[] = {"hello\r\n\r\n", "", "\r\n", "GET / HTTP/1.1\r\n\r\n",
                                       "OPTIONS\r\n\r\n", "hello"};
    apr_size_t i;

    for (i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        sip_msg_t *m = NULL;
        sip_msg_error_t err = {-1, NULL};
        ck_assert_int_ne(sip_msg_parse(pool, junk[i], strlen(junk[i]), &LIM, 1, &m, &err),
                         APR_SUCCESS);
        ck_assert_msg(err.status == 0, "'%s' gave status %d, expected 0", junk[i], err.status);
    }
}
END_TEST

/* sip_message.h: the user part is returned "still %-escaped" (the script
 * name is unescaped once, by sip_cgi_locate). */
START_TEST(parse_uri_user_forms)
{
    static const char *const cases[][2] = {
        {"sip:al%69ce@example.com", "al%69ce"},
        {"sip:alice:secret@example.com", "alice"},
        {"sip:alice@example.com;user=phone", "alice"},
        {"sip:example.com", NULL},
        {"sip:example.com;x=a@b", NULL},
    };
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *text = edit(OPTIONS_TEXT(), "OPTIONS ",
                                apr_pstrcat(pool, "OPTIONS ", cases[i][0], " SIP/2.0", NULL));
        sip_msg_t *m;
        const char *reason = NULL;
        int st = parse_status(text, &LIM, 1, &m, &reason);

        ck_assert_msg(st == 0, "%s: status %d (%s)", cases[i][0], st, reason);
        ck_assert_pstr_eq(sip_msg_uri_user(m), cases[i][1]);
        ck_assert_str_eq(sip_msg_request_uri(m), cases[i][0]);
    }
}
END_TEST

START_TEST(parse_escaped_nul)
{
    const char *text = edit(OPTIONS_TEXT(), "OPTIONS ", "OPTIONS sip:a%00b@example.com SIP/2.0");
    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 400);
    text = edit(OPTIONS_TEXT(), "t:", "t: <sip:a%00b@example.com>");
    ck_assert_int_eq(parse_status(text, &LIM, 1, NULL, NULL), 400);
}
END_TEST

START_TEST(parse_nul_in_header)
{
    const char *text = OPTIONS_TEXT();
    char *copy = apr_pstrdup(pool, text);
    apr_size_t len = strlen(text);
    sip_msg_t *m;
    sip_msg_error_t err = {-1, NULL};

    copy[strstr(copy, "part one") - copy + 4] = '\0';   /* "part\0one" */
    ck_assert_int_ne(sip_msg_parse(pool, copy, len, &LIM, 1, &m, &err), APR_SUCCESS);
    ck_assert_int_eq(err.status, 400);
}
END_TEST

START_TEST(parse_tel_uri)
{
    const char *text = edit(OPTIONS_TEXT(), "OPTIONS ", "OPTIONS tel:+15551234567 SIP/2.0");
    const char *reason = NULL;
    int st = parse_status(text, &LIM, 1, NULL, &reason);

    ck_assert_msg(st == 416, "tel: Request-URI gave %d (%s), expected 416", st, reason);
}
END_TEST

START_TEST(parse_sips_uri)
{
    const char *text = edit(OPTIONS_TEXT(), "OPTIONS ", "OPTIONS sips:alice@example.com SIP/2.0");
    sip_msg_t *m;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, NULL), 0);
    ck_assert_str_eq(sip_msg_uri_user(m), "alice");
}
END_TEST

/* How many times 'needle' occurs in 'hay'. */
static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (hay = strstr(hay, needle); hay; hay = strstr(hay + 1, needle))
        n++;
    return n;
}

/* The first line of 'text' starting with 'start', without its CRLF (the
 * start line included, the body not). */
static const char *line_of(const char *text, const char *start)
{
    const char *p = text, *e;

    for (;;) {
        if (strncmp(p, start, strlen(start)) == 0)
            break;
        p = strstr(p, "\r\n");
        if (!p || p[2] == '\r')
            return NULL;
        p += 2;
    }
    e = strstr(p, "\r\n");
    return apr_pstrmemdup(pool, p, e ? (apr_size_t)(e - p) : strlen(p));
}

/* The value of header 'name' in serialized 'text' (whitespace trimmed). */
static const char *hval(const char *text, const char *name)
{
    const char *l = line_of(text, apr_pstrcat(pool, name, ":", NULL));
    char *v;
    apr_size_t n;

    if (!l)
        return NULL;
    l += strlen(name) + 1;
    while (*l == ' ' || *l == '\t')
        l++;
    v = apr_pstrdup(pool, l);
    n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        v[--n] = '\0';
    return v;
}

START_TEST(raw_error_response)
{
    const char *text = edit(OPTIONS_TEXT(), "Max-Forwards:", NULL);
    sip_msg_t *m;
    const char *reason, *r, *v1, *v2;
    apr_size_t len = 0;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 400);
    r = sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 0, &len);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(len, strlen(r));
    ck_assert_int_eq(strncmp(r, "SIP/2.0 400 ", 12), 0);
    v1 = strstr(r, "\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123\r\n");
    v2 = strstr(r, "\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKdef456\r\n");
    ck_assert_ptr_nonnull(v1);
    ck_assert_ptr_nonnull(v2);
    ck_assert_msg(v1 < v2, "Via lines out of order");
    ck_assert_pstr_eq(line_of(r, "From:"), "From: \"Bob\" <sip:bob@example.org>;tag=ft1");
    ck_assert_pstr_eq(line_of(r, "To:"), "To: <sip:alice@example.com>;tag=xyz");
    ck_assert_pstr_eq(line_of(r, "Call-ID:"), "Call-ID: callid-1@192.0.2.1");
    ck_assert_pstr_eq(line_of(r, "CSeq:"), "CSeq: 42 OPTIONS");
    ck_assert_int_eq(strcmp(r + len - strlen("\r\nContent-Length: 0\r\n\r\n"),
                            "\r\nContent-Length: 0\r\n\r\n"), 0);
    /* nothing else is copied (the reason phrase names Max-Forwards) */
    ck_assert_ptr_null(strstr(r, "X-Folded"));
    ck_assert_ptr_null(line_of(r, "Max-Forwards"));
    ck_assert_int_eq(count(r, "\r\n"), 9);

    /* an existing To tag is kept, not doubled */
    text = edit(text, "t:", "t: <sip:alice@example.com>;tag=old");
    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 400);
    r = sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 0, &len);
    ck_assert_ptr_nonnull(r);
    ck_assert_pstr_eq(line_of(r, "To:"), "To: <sip:alice@example.com>;tag=old");
}
END_TEST

/* Our own responses: stamped Vias in order, To tagged past 100, extra
 * headers, and a body with its Content-Type and Content-Length. */
START_TEST(own_response_text)
{
    sip_msg_t *m;
    sip_source_t src;
    sip_sockaddr_t dest;
    const char *reason, *r, *v1, *v2, *hdrs[] = {"Allow", "INVITE, ACK", NULL};
    apr_size_t len = 0;

    ck_assert_int_eq(parse_status(OPTIONS_TEXT(), &LIM, 1, &m, &reason), 0);
    memset(&src, 0, sizeof(src));
    src.kind = SIP_TP_UDP;
    ck_assert_int_eq(sip_sockaddr_set(&src.peer, "198.51.100.7", 5070), APR_SUCCESS);
    sip_msg_stamp_via(m, &src, &dest);

    r = sip_msg_response_text(pool, m, 200, "OK", "tt9", hdrs, NULL, NULL, 0, &len);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(len, strlen(r));
    ck_assert_int_eq(strncmp(r, "SIP/2.0 200 OK\r\n", 16), 0);
    /* RFC 3261 §18.2.1: the top Via says where the request came from */
    v1 = strstr(r, "\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc123;received=198.51.100.7\r\n");
    v2 = strstr(r, "\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKdef456\r\n");
    ck_assert_ptr_nonnull(v1);
    ck_assert_ptr_nonnull(v2);
    ck_assert_msg(v1 < v2, "Via lines out of order");
    ck_assert_pstr_eq(line_of(r, "To:"), "To: <sip:alice@example.com>;tag=tt9");
    ck_assert_pstr_eq(line_of(r, "From:"), "From: \"Bob\" <sip:bob@example.org>;tag=ft1");
    ck_assert_pstr_eq(line_of(r, "Call-ID:"), "Call-ID: callid-1@192.0.2.1");
    ck_assert_pstr_eq(line_of(r, "CSeq:"), "CSeq: 42 OPTIONS");
    ck_assert_pstr_eq(line_of(r, "Allow:"), "Allow: INVITE, ACK");
    ck_assert_ptr_null(line_of(r, "Max-Forwards"));
    ck_assert_int_eq(strcmp(r + len - strlen("\r\nContent-Length: 0\r\n\r\n"),
                            "\r\nContent-Length: 0\r\n\r\n"), 0);

    /* 100 Trying carries no To tag (§8.2.6.1) */
    r = sip_msg_response_text(pool, m, 100, "Trying", "tt9", NULL, NULL, NULL, 0, &len);
    ck_assert_pstr_eq(line_of(r, "To:"), "To: <sip:alice@example.com>");

    /* a body: Content-Type, exact Content-Length, bytes after the blank line */
    r = sip_msg_response_text(pool, m, 404, "Not Found", "tt9", NULL, "text/plain", "gone\0!", 6,
                              &len);
    ck_assert_pstr_eq(line_of(r, "Content-Type:"), "Content-Type: text/plain");
    ck_assert_pstr_eq(line_of(r, "Content-Length:"), "Content-Length: 6");
    ck_assert_int_eq(memcmp(r + len - 10, "\r\n\r\ngone\0!", 10), 0);
}
END_TEST

/* Without Via a datagram answer has nowhere to go; on a stream it does. */
START_TEST(raw_error_response_without_via)
{
    const char *text = edit(edit(OPTIONS_TEXT(), "Via:", NULL), "v:", NULL);
    sip_msg_t *m;
    const char *reason, *r;
    apr_size_t len = 0;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 400);
    ck_assert_ptr_null(sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 0, &len));
    r = sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 1, &len);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(len, strlen(r));
    ck_assert_int_eq(strncmp(r, "SIP/2.0 400 ", 12), 0);
    ck_assert_ptr_null(line_of(r, "Via:"));
    ck_assert_pstr_eq(line_of(r, "Call-ID:"), "Call-ID: callid-1@192.0.2.1");
    ck_assert_pstr_eq(line_of(r, "To:"), "To: <sip:alice@example.com>;tag=xyz");
}
END_TEST

START_TEST(raw_error_response_from_bad_start_line)
{
    /* a request line nobody can parse, but the headers are there */
    const char *text = edit(OPTIONS_TEXT(), "OPTIONS ", "OPTIONS  SIP/2.0");
    sip_msg_t *m;
    const char *reason, *r;
    apr_size_t len;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 400);
    r = sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 0, &len);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(strncmp(r, "SIP/2.0 400 ", 12), 0);
    ck_assert_pstr_eq(line_of(r, "CSeq:"), "CSeq: 42 OPTIONS");
}
END_TEST

static const char *as_method(const char *text, const char *method)
{
    text = edit(text, "OPTIONS ", apr_pstrcat(pool, method, " sip:alice@example.com SIP/2.0",
                                              NULL));
    return edit(text, "CSeq:", apr_pstrcat(pool, "CSeq: 42 ", method, NULL));
}

START_TEST(raw_error_response_not_for_ack)
{
    const char *text = as_method(edit(OPTIONS_TEXT(), "Max-Forwards:", NULL), "ACK");
    sip_msg_t *m;
    const char *reason;
    apr_size_t len;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 400);
    ck_assert_str_eq(sip_msg_method(m), "ACK");
    ck_assert_ptr_null(sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 0, &len));
    ck_assert_ptr_null(sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 1, &len));
}
END_TEST

/* Only ACK goes unanswered: a method that merely contains the letters
 * "ack" (an extension method is any token) still gets its 400. */
START_TEST(raw_error_response_method_containing_ack)
{
    const char *text = as_method(edit(OPTIONS_TEXT(), "Max-Forwards:", NULL), "FEEDBACK");
    sip_msg_t *m;
    const char *reason, *r;
    apr_size_t len;

    ck_assert_int_eq(parse_status(text, &LIM, 1, &m, &reason), 400);
    ck_assert_str_eq(sip_msg_method(m), "FEEDBACK");
    r = sip_msg_raw_error_response(pool, m, 400, reason, "xyz", 0, &len);
    ck_assert_msg(r != NULL, "no 400 for a FEEDBACK request: its CSeq '42 FEEDBACK' "
                  "matched ap_strcasestr(cseq, \"ACK\")");
}
END_TEST

static Suite *parse_suite(void)
{
    Suite *s = suite_create("sip_msg_parse");
    TCase *tc = tcase_create("parse");
    TCase *tr = tcase_create("raw_error_response");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, parse_valid_options);
    tcase_add_test(tc, parse_body);
    tcase_add_test(tc, parse_missing_mandatory);
    tcase_add_test(tc, parse_version_not_supported);
    tcase_add_test(tc, parse_bad_cseq);
    tcase_add_test(tc, parse_bad_max_forwards);
    tcase_add_test(tc, parse_content_length_checks);
    tcase_add_test(tc, parse_limits);
    tcase_add_test(tc, parse_responses_dropped);
    tcase_add_test(tc, parse_garbage);
    tcase_add_test(tc, parse_uri_user_forms);
    tcase_add_test(tc, parse_escaped_nul);
    tcase_add_test(tc, parse_nul_in_header);
    tcase_add_test(tc, parse_tel_uri);
    tcase_add_test(tc, parse_sips_uri);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(tr, pool_setup, pool_teardown);
    tcase_add_test(tr, raw_error_response);
    tcase_add_test(tr, raw_error_response_without_via);
    tcase_add_test(tr, own_response_text);
    tcase_add_test(tr, raw_error_response_from_bad_start_line);
    tcase_add_test(tr, raw_error_response_not_for_ack);
    tcase_add_test(tr, raw_error_response_method_containing_ack);
    suite_add_tcase(s, tr);
    return s;
}

/* ================================================================== */
/* 6. script responses: parse, complete, serialize                    */

static const char *const INVITE_LINES[] = {
    "INVITE sip:alice@example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1",
    "Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKinv0",
    "Max-Forwards: 70",
    "From: \"Bob\" <sip:bob@example.org>;tag=ft1",
    "To: <sip:alice@example.com>",
    "Call-ID: inv-1@192.0.2.1",
    "CSeq: 7 INVITE",
    "Contact: <sip:bob@192.0.2.1>",
    "Content-Length: 0",
    NULL
};

static sip_msg_t *invite(void)
{
    sip_msg_t *m = NULL;
    ck_assert_int_eq(parse_status(build(INVITE_LINES, NULL), &LIM, 1, &m, NULL), 0);
    return m;
}

static const char *script_reply(const char *out, const char *to_tag, apr_size_t *len)
{
    const char *why = NULL, *text;
    sip_msg_t *resp = sip_msg_parse_script_response(pool, out, strlen(out), &why);

    ck_assert_msg(resp != NULL, "script output refused: %s", why);
    sip_msg_complete_response(resp, invite(), to_tag);
    text = sip_msg_serialize(pool, resp, len);
    ck_assert_ptr_nonnull(text);
    return text;
}

START_TEST(script_486_lf_only)
{
    apr_size_t len = 0;
    const char *t = script_reply("SIP/2.0 486 Busy Here\n\n", "tt9", &len);
    const char *v1, *v2;

    ck_assert_uint_eq(len, strlen(t));
    ck_assert_int_eq(strncmp(t, "SIP/2.0 486 Busy Here\r\n", 23), 0);
    v1 = strstr(t, "\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1\r\n");
    v2 = strstr(t, "\r\nVia: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKinv0\r\n");
    ck_assert_ptr_nonnull(v1);
    ck_assert_ptr_nonnull(v2);
    ck_assert_msg(v1 < v2, "Via lines out of order");
    ck_assert_int_eq(count(t, "Via:"), 2);
    ck_assert_pstr_eq(line_of(t, "From:"), "From: \"Bob\" <sip:bob@example.org>;tag=ft1");
    ck_assert_pstr_eq(line_of(t, "To:"), "To: <sip:alice@example.com>;tag=tt9");
    ck_assert_pstr_eq(line_of(t, "Call-ID:"), "Call-ID: inv-1@192.0.2.1");
    ck_assert_pstr_eq(line_of(t, "CSeq:"), "CSeq: 7 INVITE");
    ck_assert_pstr_eq(hval(t, "Content-Length"), "0");
    ck_assert_int_eq(count(t, "\n") , count(t, "\r\n"));
    ck_assert_str_eq(t + strlen(t) - 4, "\r\n\r\n");
    ck_assert_ptr_null(strstr(t, "Contact:"));
    ck_assert_ptr_null(strstr(t, "Max-Forwards:"));
}
END_TEST

START_TEST(script_200_with_body)
{
    static const char sdp[] = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\nc=IN IP4 192.0.2.5\r\n"
                              "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const char *out = apr_psprintf(pool, "SIP/2.0 200 OK\nContact: <sip:alice@192.0.2.5>\n"
                                   "Content-Type: application/sdp\nContent-Length: %d\n\n%s",
                                   (int)strlen(sdp), sdp);
    apr_size_t len = 0;
    const char *t = script_reply(out, "tt9", &len);
    const char *body = strstr(t, "\r\n\r\n");

    ck_assert_ptr_nonnull(body);
    body += 4;
    ck_assert_uint_eq(len - (apr_size_t)(body - t), strlen(sdp));
    ck_assert_mem_eq(body, sdp, strlen(sdp));
    ck_assert_pstr_eq(hval(t, "Content-Length"), apr_itoa(pool, (int)strlen(sdp)));
    ck_assert_pstr_eq(line_of(t, "Content-Type:"), "Content-Type: application/sdp");
    ck_assert_pstr_eq(line_of(t, "Contact:"), "Contact: <sip:alice@192.0.2.5>");
    ck_assert_pstr_eq(line_of(t, "To:"), "To: <sip:alice@example.com>;tag=tt9");
}
END_TEST

/* RFC 3050 §5.6 rule 4: a body to EOF gets a Content-Length inserted. */
START_TEST(script_200_body_without_length)
{
    static const char sdp[] = "v=0\no=- 1 1 IN IP4 192.0.2.5\n";
    const char *out = apr_pstrcat(pool, "SIP/2.0 200 OK\nContent-Type: application/sdp\n\n",
                                  sdp, NULL);
    apr_size_t len = 0;
    const char *t = script_reply(out, "tt9", &len);
    const char *body = strstr(t, "\r\n\r\n");

    ck_assert_ptr_nonnull(body);
    body += 4;
    ck_assert_uint_eq(len - (apr_size_t)(body - t), strlen(sdp));
    ck_assert_mem_eq(body, sdp, strlen(sdp));
    ck_assert_pstr_eq(hval(t, "Content-Length"), apr_itoa(pool, (int)strlen(sdp)));
}
END_TEST

START_TEST(script_own_headers_kept)
{
    apr_size_t len = 0;
    const char *t = script_reply("SIP/2.0 302 Moved\r\nFrom: <sip:other@example.net>;tag=zz\r\n"
                                 "To: <sip:alice@example.com>;tag=mine\r\n"
                                 "Contact: <sip:alice@elsewhere.example>\r\n\r\n", "tt9", &len);

    ck_assert_pstr_eq(line_of(t, "From:"), "From: <sip:other@example.net>;tag=zz");
    ck_assert_int_eq(count(t, "From:"), 1);
    ck_assert_pstr_eq(line_of(t, "To:"), "To: <sip:alice@example.com>;tag=mine");
    ck_assert_int_eq(count(t, "tt9"), 0);
    ck_assert_pstr_eq(line_of(t, "Call-ID:"), "Call-ID: inv-1@192.0.2.1");
    ck_assert_pstr_eq(line_of(t, "Contact:"), "Contact: <sip:alice@elsewhere.example>");
}
END_TEST

START_TEST(script_via_always_from_request)
{
    apr_size_t len = 0;
    const char *t = script_reply("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKfake\n\n",
                                 "tt9", &len);

    ck_assert_ptr_null(strstr(t, "198.51.100.1"));
    ck_assert_int_eq(count(t, "Via:"), 2);
    ck_assert_ptr_nonnull(strstr(t, "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1\r\n"));
}
END_TEST

START_TEST(script_100_has_no_tag)
{
    apr_size_t len = 0;
    const char *t = script_reply("SIP/2.0 100 Trying\n\n", "tt9", &len);

    ck_assert_pstr_eq(line_of(t, "To:"), "To: <sip:alice@example.com>");
}
END_TEST

START_TEST(script_bad_status)
{
    static const char *const bad[] = {"SIP/2.0 99 Low\n\n", "SIP/2.0 700 High\n\n",
                                      "SIP/2.0 000 Zero\n\n", "SIP/2.0 1000 Huge\n\n"};
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        sip_msg_t *m = sip_msg_parse_script_response(pool, bad[i], strlen(bad[i]), &why);
        ck_assert_msg(m == NULL, "'%s' accepted", bad[i]);
        ck_assert_ptr_nonnull(why);
    }
}
END_TEST

START_TEST(script_request_refused)
{
    const char *why = NULL;
    const char *out = "INVITE sip:carol@example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\n\n";
    ck_assert_ptr_null(sip_msg_parse_script_response(pool, out, strlen(out), &why));
    ck_assert_ptr_nonnull(why);
    why = NULL;
    out = "this is not SIP at all\n\n";
    ck_assert_ptr_null(sip_msg_parse_script_response(pool, out, strlen(out), &why));
    ck_assert_ptr_nonnull(why);
}
END_TEST

START_TEST(make_response)
{
    sip_msg_t *req = invite(), *r;
    const char *t;
    apr_size_t len = 0;

    r = sip_msg_make_response(pool, req, 480, "Temporarily Unavailable", "mk1");
    ck_assert_ptr_nonnull(r);
    sip_msg_add_header(r, "Retry-After", "60");
    t = sip_msg_serialize(pool, r, &len);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(strncmp(t, "SIP/2.0 480 Temporarily Unavailable\r\n", 37), 0);
    ck_assert_int_eq(count(t, "Via:"), 2);
    ck_assert_pstr_eq(line_of(t, "To:"), "To: <sip:alice@example.com>;tag=mk1");
    ck_assert_pstr_eq(line_of(t, "CSeq:"), "CSeq: 7 INVITE");
    ck_assert_pstr_eq(line_of(t, "Retry-After:"), "Retry-After: 60");
    ck_assert_pstr_eq(hval(t, "Content-Length"), "0");
    r = sip_msg_make_response(pool, req, 100, "Trying", "mk1");
    t = sip_msg_serialize(pool, r, &len);
    ck_assert_pstr_eq(line_of(t, "To:"), "To: <sip:alice@example.com>");
}
END_TEST

START_TEST(header_long_names)
{
    ck_assert_str_eq(sip_header_long_name("f", 1), "From");
    ck_assert_str_eq(sip_header_long_name("I", 1), "Call-ID");
    ck_assert_str_eq(sip_header_long_name("v", 1), "Via");
    ck_assert_str_eq(sip_header_long_name("l", 1), "Content-Length");
    ck_assert_str_eq(sip_header_long_name("m", 1), "Contact");
    ck_assert_ptr_null(sip_header_long_name("g", 1));
    ck_assert_ptr_null(sip_header_long_name("ff", 2));
    ck_assert_ptr_null(sip_header_long_name("1", 1));
}
END_TEST

static Suite *response_suite(void)
{
    Suite *s = suite_create("script_response");
    TCase *tc = tcase_create("script_response");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, script_486_lf_only);
    tcase_add_test(tc, script_200_with_body);
    tcase_add_test(tc, script_200_body_without_length);
    tcase_add_test(tc, script_own_headers_kept);
    tcase_add_test(tc, script_via_always_from_request);
    tcase_add_test(tc, script_100_has_no_tag);
    tcase_add_test(tc, script_bad_status);
    tcase_add_test(tc, script_request_refused);
    tcase_add_test(tc, make_response);
    tcase_add_test(tc, header_long_names);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 7. timer heap and loop                                              */

#define NTIMERS 200

static sip_loop_t *loop;
static sip_timer_t timers[NTIMERS], stopper;
static int fired[NTIMERS], cancelled[NTIMERS], fire_order[NTIMERS + 1], nfired;
static apr_time_t last_when;
static int out_of_order, early;
static volatile sig_atomic_t stop_flag;

static void loop_setup(void)
{
    pool_setup();
    ck_assert_int_eq(sip_loop_create(&loop, pool), APR_SUCCESS);
    memset(timers, 0, sizeof(timers));
    memset(&stopper, 0, sizeof(stopper));
    memset(fired, 0, sizeof(fired));
    memset(cancelled, 0, sizeof(cancelled));
    nfired = 0;
    last_when = 0;
    out_of_order = early = 0;
    stop_flag = 0;
}

static void loop_teardown(void)
{
    free(loop->heap);
    pool_teardown();
}

/* White box: the heap is a min-heap and every timer knows its slot. */
static void check_heap(void)
{
    apr_size_t i;

    for (i = 0; i < loop->nheap; i++) {
        ck_assert_uint_eq(loop->heap[i]->slot, i + 1);
        if (i)
            ck_assert_int_le(loop->heap[(i - 1) / 2]->when, loop->heap[i]->when);
    }
}

static void timer_fired(void *baton)
{
    int i = (int)(intptr_t)baton;
    sip_timer_t *t = i < 0 ? &stopper : &timers[i];

    if (t->when < last_when)
        out_of_order++;
    if (apr_time_now() < t->when)
        early++;
    last_when = t->when;
    ck_assert_int_eq(sip_timer_armed(t), 0);
    if (i >= 0)
        fired[i]++;
    fire_order[nfired++] = i;
}

static void stop_fired(void *baton)
{
    timer_fired(baton);
    stop_flag = 1;
}

START_TEST(timers_random)
{
    int i, live = 0;
    apr_interval_time_t max_delay = 0;

    srand(1234 + (unsigned)_i);
    for (i = 0; i < NTIMERS; i++) {
        apr_interval_time_t d = rand() % 50000;   /* up to 50 ms */
        if (d > max_delay)
            max_delay = d;
        sip_timer_set(loop, &timers[i], d, timer_fired, (void *)(intptr_t)i);
        ck_assert_int_eq(sip_timer_armed(&timers[i]), 1);
    }
    ck_assert_uint_eq(loop->nheap, NTIMERS);
    check_heap();
    for (i = 0; i < NTIMERS; i++) {
        if (rand() % 2) {
            sip_timer_cancel(loop, &timers[i]);
            cancelled[i] = 1;
            ck_assert_int_eq(sip_timer_armed(&timers[i]), 0);
            check_heap();
        }
        else
            live++;
    }
    /* cancelling again is harmless */
    for (i = 0; i < NTIMERS; i++)
        if (cancelled[i])
            sip_timer_cancel(loop, &timers[i]);
    ck_assert_uint_eq(loop->nheap, (apr_size_t)live);
    check_heap();

    sip_timer_set(loop, &stopper, max_delay + 20000, stop_fired, (void *)(intptr_t)-1);
    sip_loop_run(loop, &stop_flag);

    ck_assert_int_eq(out_of_order, 0);
    ck_assert_int_eq(early, 0);
    ck_assert_int_eq(nfired, live + 1);
    ck_assert_int_eq(fire_order[nfired - 1], -1);
    for (i = 0; i < NTIMERS; i++)
        ck_assert_msg(fired[i] == (cancelled[i] ? 0 : 1), "timer %d (%s) fired %d times", i,
                      cancelled[i] ? "cancelled" : "armed", fired[i]);
    ck_assert_uint_eq(loop->nheap, 0);
}
END_TEST

START_TEST(timers_rearm_moves)
{
    /* deadlines 25 ms apart at least: a loaded machine may pause the test
     * between two sip_timer_set calls without changing the order */
    int i;

    sip_timer_set(loop, &timers[0], apr_time_from_msec(150), timer_fired, (void *)0);
    sip_timer_set(loop, &timers[1], apr_time_from_msec(100), timer_fired, (void *)1);
    sip_timer_set(loop, &timers[2], apr_time_from_msec(50), timer_fired, (void *)2);
    ck_assert_ptr_eq(loop->heap[0], &timers[2]);
    /* re-arming is a move, not a second entry */
    sip_timer_set(loop, &timers[0], apr_time_from_msec(25), timer_fired, (void *)0);
    ck_assert_uint_eq(loop->nheap, 3);
    ck_assert_ptr_eq(loop->heap[0], &timers[0]);
    sip_timer_set(loop, &timers[2], apr_time_from_msec(200), timer_fired, (void *)2);
    ck_assert_uint_eq(loop->nheap, 3);
    check_heap();
    for (i = 0; i < 50; i++)
        sip_timer_set(loop, &timers[3], apr_time_from_msec(75), timer_fired, (void *)3);
    ck_assert_uint_eq(loop->nheap, 4);
    check_heap();
    sip_timer_set(loop, &stopper, apr_time_from_msec(300), stop_fired, (void *)(intptr_t)-1);
    sip_loop_run(loop, &stop_flag);

    ck_assert_int_eq(nfired, 5);
    ck_assert_int_eq(fire_order[0], 0);
    ck_assert_int_eq(fire_order[1], 3);
    ck_assert_int_eq(fire_order[2], 1);
    ck_assert_int_eq(fire_order[3], 2);
    ck_assert_int_eq(fire_order[4], -1);
    ck_assert_int_eq(fired[0] + fired[1] + fired[2] + fired[3], 4);
    ck_assert_int_eq(out_of_order, 0);
    ck_assert_int_eq(early, 0);
}
END_TEST

/* Cancelling from inside a callback (a timer due in the same batch). */
static void cancel_next(void *baton)
{
    timer_fired(baton);
    sip_timer_cancel(loop, &timers[1]);
}

START_TEST(timers_cancel_from_callback)
{
    sip_timer_set(loop, &timers[0], 0, cancel_next, (void *)0);
    sip_timer_set(loop, &timers[1], 1, timer_fired, (void *)1);
    sip_timer_set(loop, &timers[2], 2, timer_fired, (void *)2);
    sip_timer_set(loop, &stopper, apr_time_from_msec(5), stop_fired, (void *)(intptr_t)-1);
    apr_sleep(apr_time_from_msec(1));
    sip_loop_run(loop, &stop_flag);
    ck_assert_int_eq(fired[0], 1);
    ck_assert_int_eq(fired[1], 0);
    ck_assert_int_eq(fired[2], 1);
    ck_assert_int_eq(nfired, 3);
}
END_TEST

static Suite *timer_suite(void)
{
    Suite *s = suite_create("timers");
    TCase *tc = tcase_create("heap");

    tcase_add_checked_fixture(tc, loop_setup, loop_teardown);
    tcase_add_loop_test(tc, timers_random, 0, 5);
    tcase_add_test(tc, timers_rearm_moves);
    tcase_add_test(tc, timers_cancel_from_callback);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 8. sip_stats: the shared counters and their rendering               */

START_TEST(stats_unattached)
{
    /* Before the parent attaches the segment, counting is harmless. */
    ck_assert_ptr_eq(sip_stats, &unattached);
    sip_stats->msgs_in[SIP_TP_UDP]++;
    ck_assert_uint_eq(unattached.msgs_in[SIP_TP_UDP], 1);
}
END_TEST

START_TEST(stats_attach_shared_and_kept)
{
    sip_stats_t *first;
    pid_t pid;
    int status;

    ck_assert_int_eq(sip_stats_attach(pool), APR_SUCCESS);
    first = sip_stats;
    ck_assert_ptr_ne(first, &unattached);
    ck_assert_uint_eq(first->magic, SIP_STATS_MAGIC);
    ck_assert_uint_eq(first->txns, 0);
    first->txns = 41;

    /* A child forked afterwards writes where the parent reads. */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        sip_stats->txns++;
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_uint_eq(first->txns, 42);

    /* The next generation (graceful restart) finds the same segment. */
    sip_stats = &unattached;
    ck_assert_int_eq(sip_stats_attach(pool), APR_SUCCESS);
    ck_assert_ptr_eq(sip_stats, first);
    ck_assert_uint_eq(sip_stats->txns, 42);

    /* A segment of another layout is not reused. */
    first->size = 8;
    ck_assert_int_eq(sip_stats_attach(pool), APR_SUCCESS);
    ck_assert_ptr_ne(sip_stats, first);
    ck_assert_uint_eq(sip_stats->txns, 0);
    ck_assert_uint_eq(sip_stats->size, sizeof(sip_stats_t));
    sip_stats = &unattached;
}
END_TEST

START_TEST(stats_engine_lifecycle)
{
    sip_stats_t st;

    memset(&st, 0, sizeof(st));
    sip_stats = &st;
    st.now.txns = 5;
    st.now.scripts = 2;
    st.now.tcp = 7;
    st.txns = 100;
    sip_stats_engine_started(1234, apr_time_from_sec(1000));
    ck_assert_uint_eq(st.now.txns, 0);
    ck_assert_uint_eq(st.now.scripts, 0);
    ck_assert_uint_eq(st.now.tcp, 0);
    ck_assert_uint_eq(st.txns, 100);
    ck_assert_uint_eq(st.engine_pid, 1234);
    ck_assert_uint_eq(st.engine_starts, 1);
    st.now.bindings = 3;
    sip_stats_engine_died(sip_stats);
    ck_assert_uint_eq(st.now.bindings, 0);
    ck_assert_uint_eq(st.engine_pid, 0);
    ck_assert_uint_eq(st.engine_deaths, 1);
    sip_stats_engine_started(1235, apr_time_from_sec(2000));
    ck_assert_uint_eq(st.engine_starts, 2);
    ck_assert_uint_eq(st.txns, 100);
    sip_stats = &unattached;
}
END_TEST

static void stats_fill(sip_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    st->engine_pid = 321;
    st->engine_start = apr_time_from_sec(1000);
    st->engine_starts = 3;
    st->engine_deaths = 1;
    st->now.txns = 4;
    st->txns = 10;
    st->now.ctxns = 1;
    st->ctxns = 2;
    st->finals[0] = 6;
    st->finals[4] = 1;
    st->now.scripts = 1;
    st->scripts = 9;
    st->script_timeouts = 1;
    st->script_crashes = 2;
    st->script_bad_output = 3;
    st->script_start_failures = 4;
    st->now.bindings = 5;
    st->msgs_in[SIP_TP_UDP] = 11;
    st->msgs_out[SIP_TP_TCP] = 12;
    st->bad_msgs = 13;
    st->explosions = 14;
    st->explode_requests = 15;
    st->explode_refused = 16;
    st->explode_consent = 17;
}

START_TEST(stats_format_auto)
{
    sip_stats_t st;
    const char *txt;

    stats_fill(&st);
    txt = sip_stats_format(pool, &st, apr_time_from_sec(1090), SIP_STATS_AUTO);
    ck_assert_ptr_null(strchr(txt, '<'));
    ck_assert_ptr_nonnull(strstr(txt, "SipEnginePid: 321\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipEngineUptime: 90\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipEngineRestarts: 2\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipEngineCrashes: 1\n"));
    ck_assert_ptr_nonnull(strstr(txt, "\nSipTransactionsNow: 4\nSipTransactionsTotal: 10\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipResponses2xx: 6\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipResponses6xx: 1\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipScriptsFailed: 10\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipRegistrationsNow: 5\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipUdpMessagesIn: 11\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipTcpMessagesOut: 12\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipBadMessages: 13\n"));
    ck_assert_ptr_nonnull(strstr(txt, "\nSipExplosions: 14\nSipExplodeRequests: 15\n"
                                      "SipExplodeRefused: 16\nSipExplodeConsentRefused: 17\n"));
    /* every line is "SipName: number" */
    {
        const char *l = txt;
        int n = 0;
        while (*l) {
            const char *nl = strchr(l, '\n');
            const char *c = strstr(l, ": ");
            ck_assert_ptr_nonnull(nl);
            ck_assert(strncmp(l, "Sip", 3) == 0);
            ck_assert(c && c < nl);
            for (c += 2; c < nl; c++)
                ck_assert(apr_isdigit(*c));
            l = nl + 1;
            n++;
        }
        ck_assert_int_eq(n, 72);     /* 35, 5 CPL, 4 URI-list, 5 TLS, 7 WS, SipFlowsDead, 2 STUN, 4 DNS,
                                      * 3 hand-over, SipProxyStatesNow, 3 location batches, 2 auth */
    }
    /* no engine: no uptime */
    st.engine_pid = 0;
    txt = sip_stats_format(pool, &st, apr_time_from_sec(1090), SIP_STATS_AUTO);
    ck_assert_ptr_nonnull(strstr(txt, "SipEngineUptime: 0\n"));
    /* WebSocket: messages by kind (WS, WSS), connections, errors */
    st.msgs_in[SIP_TP_WS] = 21;
    st.msgs_out[SIP_TP_WSS] = 22;
    st.now.ws = 3;
    st.ws_conns = 23;
    st.ws_errors = 24;
    txt = sip_stats_format(pool, &st, apr_time_from_sec(1090), SIP_STATS_AUTO);
    ck_assert_ptr_nonnull(strstr(txt, "SipWsMessagesIn: 21\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipWssMessagesOut: 22\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipWsConnectionsNow: 3\nSipWsConnectionsTotal: 23\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipWsProtocolErrors: 24\n"));
}
END_TEST

START_TEST(stats_format_html)
{
    sip_stats_t st;
    const char *html, *notable;

    stats_fill(&st);
    html = sip_stats_format(pool, &st, apr_time_from_sec(1090), 0);
    ck_assert_ptr_nonnull(strstr(html, "<h2>mod_sip</h2>"));
    ck_assert_ptr_nonnull(strstr(html, "SIP engine 321 started Thu, 01 Jan 1970 00:16:40 GMT"));
    ck_assert_ptr_nonnull(strstr(html, "<table>"));
    ck_assert_ptr_nonnull(strstr(html, "<td title=\"SipBadMessages\">"));
    ck_assert_ptr_nonnull(strstr(html, ">13</td>"));
    ck_assert_ptr_null(strstr(html, "SipBadMessages: "));
    notable = sip_stats_format(pool, &st, apr_time_from_sec(1090), SIP_STATS_NOTABLE);
    ck_assert_ptr_null(strstr(notable, "<table"));
    ck_assert_ptr_null(strstr(notable, "<td"));
    ck_assert_ptr_nonnull(strstr(notable, "<dd>13</dd>"));
    /* every <dl> is closed, and none is empty */
    {
        const char *s;
        int open = 0, close = 0;
        for (s = notable; (s = strstr(s, "<dl>")); s++)
            open++;
        for (s = notable; (s = strstr(s, "</dl>")); s++)
            close++;
        ck_assert_int_eq(open, 11);     /* a section each (digest authentication the 11th) */
        ck_assert_int_eq(close, 11);
        ck_assert_ptr_null(strstr(notable, "<dl>\n</dl>"));
    }
    st.engine_pid = 0;
    html = sip_stats_format(pool, &st, apr_time_from_sec(1090), 0);
    ck_assert_ptr_nonnull(strstr(html, "No SIP engine is running."));
}
END_TEST

/* Several engines: one slot each, summed for mod_status under the names
 * of one engine; each engine's own lines beside. */
START_TEST(stats_engine_slots_summed)
{
    sip_stats_t sum, *a, *b;
    const char *txt;

    ck_assert_int_eq(sip_stats_attach(pool), APR_SUCCESS);
    a = sip_stats_slot(0);
    b = sip_stats_slot(1);
    ck_assert_ptr_eq(a, sip_stats);
    ck_assert_ptr_ne(a, b);
    memset(&a->now, 0, sizeof(*a) - offsetof(sip_stats_t, now));
    memset(&b->now, 0, sizeof(*b) - offsetof(sip_stats_t, now));
    a->engine_pid = 100;
    a->engine_start = apr_time_from_sec(1000);
    a->engine_starts = 1;
    b->engine_pid = 200;
    b->engine_start = apr_time_from_sec(1050);
    b->engine_starts = 3;           /* restarted twice */
    b->engine_deaths = 1;
    a->txns = 7;
    b->txns = 5;
    a->now.txns = 2;
    b->now.txns = 1;
    a->now.bindings = 4;            /* every engine holds every binding; */
    b->now.bindings = 3;            /* b still replaying its journal */
    a->msgs_in[SIP_TP_UDP] = 10;
    b->msgs_in[SIP_TP_TCP] = 4;
    b->dns_failures = 9;
    b->ho_dropped = 3;
    apr_cpystrn(a->fcgi[0].name, "/x.py", sizeof(a->fcgi[0].name));
    a->fcgi[0].workers = 2;
    apr_cpystrn(b->fcgi[0].name, "/y.py", sizeof(b->fcgi[0].name));
    b->fcgi[0].workers = 1;
    apr_cpystrn(b->fcgi[1].name, "/x.py", sizeof(b->fcgi[1].name));
    b->fcgi[1].workers = 3;

    /* engine 1 writes through sip_stats into its own slot only */
    sip_stats_use_slot(1);
    sip_stats->bad_msgs++;
    ck_assert_uint_eq(b->bad_msgs, 1);
    ck_assert_uint_eq(a->bad_msgs, 0);
    sip_stats_use_slot(0);

    sip_stats_sum(&sum, 2);
    ck_assert_uint_eq(sum.txns, 12);
    ck_assert_uint_eq(sum.now.txns, 3);
    ck_assert_uint_eq(sum.now.bindings, 4);    /* counted once: the fullest */
    ck_assert_uint_eq(sum.msgs_in[SIP_TP_UDP], 10);
    ck_assert_uint_eq(sum.msgs_in[SIP_TP_TCP], 4);
    ck_assert_uint_eq(sum.dns_failures, 9);
    ck_assert_uint_eq(sum.ho_dropped, 3);
    ck_assert_uint_eq(sum.bad_msgs, 1);
    ck_assert_uint_eq(sum.engine_pid, 100);
    ck_assert_uint_eq(sum.engine_starts, 3);   /* two restarts, plus one */
    ck_assert_uint_eq(sum.engine_deaths, 1);
    ck_assert_str_eq(sum.fcgi[0].name, "/x.py");
    ck_assert_uint_eq(sum.fcgi[0].workers, 5);
    ck_assert_str_eq(sum.fcgi[1].name, "/y.py");
    ck_assert_uint_eq(sum.fcgi[1].workers, 1);
    ck_assert_str_eq(sum.fcgi[2].name, "");
    txt = sip_stats_format(pool, &sum, apr_time_from_sec(1090), SIP_STATS_AUTO);
    ck_assert_ptr_nonnull(strstr(txt, "SipEngineRestarts: 2\n"));
    ck_assert_ptr_nonnull(strstr(txt, "SipTransactionsTotal: 12\n"));
    /* one engine: only its own slot */
    sip_stats_sum(&sum, 1);
    ck_assert_uint_eq(sum.txns, 7);

    txt = sip_stats_format_engines(pool, 2, apr_time_from_sec(1090), SIP_STATS_AUTO);
    ck_assert_str_eq(txt, "SipEngine0Pid: 100\nSipEngine0Uptime: 90\nSipEngine0MessagesIn: 10\n"
                          "SipEngine0TransactionsTotal: 7\nSipEngine1Pid: 200\n"
                          "SipEngine1Uptime: 40\nSipEngine1MessagesIn: 4\n"
                          "SipEngine1TransactionsTotal: 5\n");
    txt = sip_stats_format_engines(pool, 2, apr_time_from_sec(1090), 0);
    ck_assert_ptr_nonnull(strstr(txt, "<p>SIP engine 1: process 200, up 40 s"));

    sip_stats_engine_died(b);
    ck_assert_uint_eq(b->engine_pid, 0);
    ck_assert_uint_eq(b->engine_deaths, 2);
    ck_assert_uint_eq(a->engine_pid, 100);
    sip_stats = &unattached;
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("sip_stats");
    TCase *tc = tcase_create("stats");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, stats_engine_slots_summed);
    tcase_add_test(tc, stats_unattached);
    tcase_add_test(tc, stats_attach_shared_and_kept);
    tcase_add_test(tc, stats_engine_lifecycle);
    tcase_add_test(tc, stats_format_auto);
    tcase_add_test(tc, stats_format_html);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 9. registrar and location store: q, URI keys, journal lines, limits  */

START_TEST(qvalue_grammar)
{
    static const struct { const char *in; int want; } cases[] = {
        {"0", 0}, {"1", 1000}, {"0.5", 500}, {"0.125", 125}, {"0.05", 50}, {"1.0", 1000},
        {"1.000", 1000}, {"0.", 0}, {"1.", 1000}, {"0.999", 999},
        {"nan", -1}, {"NaN", -1}, {"inf", -1}, {"2", -1}, {"1.5", -1}, {"1.001", -1},
        {"-1", -1}, {"-0", -1}, {"0.1234", -1}, {".5", -1}, {"", -1}, {"0.5 ", -1},
        {"0x1", -1}, {"00.5", -1}, {"1e0", -1},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(sip_qvalue_parse(cases[i].in) == cases[i].want, "q=%s: got %d, want %d",
                      cases[i].in, sip_qvalue_parse(cases[i].in), cases[i].want);
    ck_assert_int_eq(sip_qvalue_parse(NULL), -1);
}
END_TEST

START_TEST(uri_key_matches_uri_equal)
{
    static const char *const uris[] = {
        "sip:bob@example.com", "SIP:bob@EXAMPLE.com", "sip:Bob@example.com",
        "sip:bob@example.com:5060", "sip:bob@example.com;transport=tcp",
        "sip:bob@example.com;TRANSPORT=TCP", "sip:bob@example.com;foo=bar",
        "sip:bob@example.com;maddr=10.0.0.1", "sip:bob:pw@example.com", "sips:bob@example.com",
        "sip:bob@example.com;user=phone", "sip:bob@example.com;lr", "sip:example.com",
    };
    size_t i, j, n = sizeof(uris) / sizeof(uris[0]);

    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++) {
            const char *a = sip_uri_key(pool, uris[i]), *b = sip_uri_key(pool, uris[j]);
            ck_assert_ptr_nonnull(a);
            ck_assert_msg((strcmp(a, b) == 0) == (sip_uri_equal(uris[i], uris[j]) != 0),
                          "%s vs %s: key and sip_uri_equal disagree", uris[i], uris[j]);
        }
    ck_assert_str_eq(sip_uri_key(pool, "sip:bob@example.com"), sip_uri_key(pool, "SIP:bob@Example.COM;foo=1"));
    ck_assert_str_ne(sip_uri_key(pool, "sip:bob@example.com"), sip_uri_key(pool, "sip:bob@example.com:5060"));
    ck_assert_ptr_null(sip_uri_key(pool, "not a uri"));
}
END_TEST

START_TEST(journal_escapes)
{
    static const char *const vals[] = {
        "plain", "a\tb", "back\\slash", "\\t is not a tab", "cr\rlf\n", "", "\t\t\\\\",
    };
    size_t i;

    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char *e = apr_pstrdup(pool, jesc(pool, vals[i]));
        ck_assert_ptr_null(strpbrk(e, "\t\r\n"));
        junesc(e);
        ck_assert_str_eq(e, vals[i]);
    }
    ck_assert_str_eq(jesc(pool, NULL), "");
}
END_TEST

static int parse_line(const char *text, int version, apr_time_t now, journal_rec_t *r)
{
    return journal_parse(apr_pstrdup(pool, text), version, now, apr_time_from_sec(86400), r);
}

START_TEST(journal_line_parsing)
{
    apr_time_t now = apr_time_from_sec(1000000);
    journal_rec_t r;

    ck_assert_int_eq(parse_line("V\t2", 1, now, &r), 'V');
    ck_assert_int_eq(r.version, 2);
    /* version 2: escapes undone, display name read */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t;x=\"a\\tb\"\tcid\t7\t1000000000000\t500\t\t\"A\\tB\"",
                                2, now, &r), 'B');
    ck_assert_str_eq(r.b.aor, "sip:a@h");
    ck_assert_str_eq(r.b.params, ";x=\"a\tb\"");
    ck_assert_str_eq(r.b.display, "\"A\tB\"");
    ck_assert_int_eq(r.b.cseq, 7);
    ck_assert_int_eq(r.b.q1000, 500);
    ck_assert_ptr_null(r.b.path);
    ck_assert(r.b.expires == (apr_time_t)1000000000000LL);
    /* version 1: an S line, a backslash is just a backslash */
    ck_assert_int_eq(parse_line("S\tsip:a@h\tsip:a@1.2.3.4\t;x=a\\tb\tcid\t1\t1000000000000\t1000\t<sip:p;lr>",
                                1, now, &r), 'B');
    ck_assert_str_eq(r.b.params, ";x=a\\tb");
    ck_assert_str_eq(r.b.path, "<sip:p;lr>");
    ck_assert_ptr_null(r.b.display);
    /* an expiry beyond the longest lifetime is cut to it; q brought into 0..1000 */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t1\t32503680000000000\t1500\t\t", 2, now, &r), 'B');
    ck_assert(r.b.expires == now + apr_time_from_sec(86400));
    ck_assert_int_eq(r.b.q1000, 1000);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t1\t1000000000000\t-5\t\t", 2, now, &r), 'B');
    ck_assert_int_eq(r.b.q1000, 0);
    /* unreadable lines are skipped */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t1\t1000000000000\tnan\t\t", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\tx\t1000000000000\t1\t\t", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t1\t99999999999999999999999\t1\t\t", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t4294967296\t1\t1\t\t", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("B\t\tsip:a@1.2.3.4\t\tcid\t1\t1\t1\t\t", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("Q\tsip:a@h", 2, now, &r), 0);
    ck_assert_int_eq(parse_line("V\t0", 1, now, &r), 0);
    ck_assert_int_eq(parse_line("D\tsip:a@h\tsip:a\\\\b@1.2.3.4", 2, now, &r), 'D');
    ck_assert_str_eq(r.b.contact, "sip:a\\b@1.2.3.4");
    ck_assert_int_eq(parse_line("A\tsip:a@h", 2, now, &r), 'A');
    ck_assert_int_eq(parse_line("K\tsip:a@h", 2, now, &r), 'K');
}
END_TEST

static void store_setup(void)
{
    pool_setup();
    aors = apr_hash_make(pool);
    index_ = apr_hash_make(pool);
    apr_pool_create(&scratch, pool);
    apr_pool_create(&loc_pool, pool);
    journal = -1;
    live = 0;
    empty_oldest = empty_newest = NULL;
    nempty = 0;
    max_bindings = SIP_DEFAULT_MAX_BINDINGS;
}

static sip_binding_t mkb(const char *aor, const char *contact, const char *cid, unsigned cseq,
                         long secs, int q)
{
    sip_binding_t b;
    memset(&b, 0, sizeof(b));
    b.aor = aor;
    b.contact = contact;
    b.params = "";
    b.call_id = cid;
    b.cseq = cseq;
    b.expires = secs ? apr_time_now() + apr_time_from_sec(secs) : 0;
    b.q1000 = q;
    return b;
}

START_TEST(store_one_binding_per_equal_uri)
{
    sip_binding_t b = mkb("sip:a@h", "sip:a@10.0.0.1:5060", "c1", 1, 600, 1000);
    apr_array_header_t *cur;

    set_binding(&b, 0);
    b = mkb("sip:a@h", "SIP:a@10.0.0.1:5060;foo=bar", "c1", 2, 900, 500);
    set_binding(&b, 0);             /* the same URI (§19.1.4): a refresh */
    ck_assert_uint_eq(sip_location_count(), 1);
    cur = sip_location_lookup(pool, "sip:a@h");
    ck_assert_int_eq(cur->nelts, 1);
    ck_assert_int_eq(APR_ARRAY_IDX(cur, 0, sip_binding_t *)->q1000, 500);
    b = mkb("sip:a@h", "sip:a@10.0.0.1:5060;transport=tcp", "c1", 3, 600, 1000);
    set_binding(&b, 0);             /* transport differs: another binding */
    ck_assert_uint_eq(sip_location_count(), 2);
    sip_location_remove("sip:a@h", "sip:a@10.0.0.1:5060;x=y");
    ck_assert_uint_eq(sip_location_count(), 1);
    cur = sip_location_lookup(pool, "sip:a@h");
    ck_assert_str_eq(APR_ARRAY_IDX(cur, 0, sip_binding_t *)->contact, "sip:a@10.0.0.1:5060;transport=tcp");
    b = mkb("sip:a@h", "sip:a@10.0.0.1:5060;transport=TCP", "c1", 4, 0, 1000);
    set_binding(&b, 0);             /* expires 0 removes */
    ck_assert_uint_eq(sip_location_count(), 0);
    cur = sip_location_lookup(pool, "sip:a@h");
    ck_assert_ptr_nonnull(cur);     /* still known: 480, not 404 */
    ck_assert_int_eq(cur->nelts, 0);
    ck_assert_ptr_null(sip_location_lookup(pool, "sip:never@h"));
    ck_assert_str_eq(sip_location_replica_text(pool, "sip:never@h"), "");   /* stays 404 */
}
END_TEST

START_TEST(store_many_bindings_in_one_aor)
{
    char uri[64];
    int i;
    apr_time_t t0 = apr_time_now();

    /* 20 000 bindings on one AoR, then each refreshed and removed: hashed,
     * so this is quick (it was quadratic: every one compared with all) */
    for (i = 0; i < 20000; i++) {
        sip_binding_t b;
        snprintf(uri, sizeof(uri), "sip:u%d@10.0.0.1:5060", i);
        b = mkb("sip:big@h", uri, "c", 1, 600, 1000);
        set_binding(&b, 0);
    }
    ck_assert_uint_eq(sip_location_count(), 20000);
    for (i = 0; i < 20000; i++) {
        sip_binding_t b;
        snprintf(uri, sizeof(uri), "SIP:u%d@10.0.0.1:5060", i);
        b = mkb("sip:big@h", uri, "c", 2, i % 2 ? 0 : 900, 1000);
        set_binding(&b, 0);
    }
    ck_assert_uint_eq(sip_location_count(), 10000);
    ck_assert_int_eq(sip_location_lookup(pool, "sip:big@h")->nelts, 10000);
    ck_assert_msg(apr_time_now() - t0 < apr_time_from_sec(5), "40 000 binding changes took %" APR_TIME_T_FMT " ms",
                  apr_time_as_msec(apr_time_now() - t0));
    sip_location_remove_all("sip:big@h");
    ck_assert_uint_eq(sip_location_count(), 0);
}
END_TEST

static sip_reg_change_t *mkchg(const char *cid, unsigned cseq, int max, int n, const char *const *uris,
                               const long *secs)
{
    sip_reg_change_t *c = apr_pcalloc(pool, sizeof(*c));
    int i;

    c->aor = "sip:a@h";
    c->call_id = cid;
    c->cseq = cseq;
    c->max_contacts = max;
    c->bindings = apr_array_make(pool, 4, sizeof(sip_binding_t));
    for (i = 0; i < n; i++)
        *(sip_binding_t *)apr_array_push(c->bindings) = mkb("sip:a@h", uris[i], cid, cseq, secs[i], 1000);
    return c;
}

START_TEST(reg_check_limits)
{
    static const char *const three[] = {"sip:x@1.1.1.1", "sip:y@1.1.1.1", "sip:z@1.1.1.1"};
    static const char *const dup[] = {"sip:w@1.1.1.1", "SIP:w@1.1.1.1", "sip:w@1.1.1.1;a=b"};
    static const char *const swap[] = {"sip:x@1.1.1.1", "sip:n@1.1.1.1"};
    static const long live3[] = {600, 600, 600}, del_add[] = {0, 600};
    apr_array_header_t *cur;
    sip_reg_change_t *c;
    long added;
    int i;

    c = mkchg("c1", 1, 3, 3, three, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, NULL, c, &added), 0);
    ck_assert_int_eq(added, 3);
    c = mkchg("c1", 1, 2, 3, three, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, NULL, c, &added), 403);   /* three > SipMaxContacts 2 */
    c = mkchg("c1", 1, 0, 3, three, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, NULL, c, &added), 0);     /* 0: no limit */
    c = mkchg("c1", 1, 1, 3, dup, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, NULL, c, &added), 0);     /* one URI three times */
    ck_assert_int_eq(added, 1);

    c = mkchg("c1", 1, 3, 3, three, live3);
    for (i = 0; i < 3; i++)
        set_binding(&APR_ARRAY_IDX(c->bindings, i, sip_binding_t), 0);
    cur = sip_location_lookup(pool, "sip:a@h");
    c = mkchg("c1", 2, 3, 3, three, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, cur, c, &added), 0);      /* refresh at the limit */
    ck_assert_int_eq(added, 0);
    c = mkchg("c2", 1, 3, 2, swap, del_add);
    ck_assert_int_eq(sip_location_reg_check(pool, cur, c, &added), 0);      /* remove one, add one */
    ck_assert_int_eq(added, 0);
    c = mkchg("c2", 1, 3, 1, swap + 1, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, cur, c, &added), 403);    /* a fourth */
    c = mkchg("c1", 1, 3, 1, three, live3);
    ck_assert_int_eq(sip_location_reg_check(pool, cur, c, &added), 500);    /* same Call-ID, old CSeq */
    c = mkchg("c1", 5, 3, 0, NULL, NULL);
    c->star = 1;
    ck_assert_int_eq(sip_location_reg_check(pool, cur, c, &added), 0);
    ck_assert_int_eq(added, -3);
    c->cseq = 1;
    ck_assert_int_eq(sip_location_reg_check(pool, cur, c, &added), 500);
    sip_location_remove_all("sip:a@h");
}
END_TEST

START_TEST(store_forgets_oldest_empty_aors)
{
    char aor[32];
    int i;

    max_bindings = 3;
    for (i = 0; i < 5; i++) {
        sip_binding_t b;
        snprintf(aor, sizeof(aor), "sip:e%d@h", i);
        b = mkb(apr_pstrdup(pool, aor), "sip:x@10.0.0.1", "c", 1, 600, 1000);
        set_binding(&b, 0);
    }
    ck_assert_uint_eq(nempty, 0);
    for (i = 0; i < 5; i++) {
        snprintf(aor, sizeof(aor), "sip:e%d@h", i);
        sip_location_remove_all(aor);
    }
    ck_assert_uint_eq(nempty, 5);
    {
        /* e3 gets a binding again: no longer empty, not forgotten */
        sip_binding_t b = mkb("sip:e3@h", "sip:x@10.0.0.1", "c", 2, 600, 1000);
        set_binding(&b, 0);
    }
    ck_assert_uint_eq(nempty, 4);
    forget_excess_empty();
    ck_assert_uint_eq(nempty, 3);
    ck_assert_ptr_null(sip_location_lookup(pool, "sip:e0@h"));     /* the oldest empty one: 404 */
    ck_assert_ptr_nonnull(sip_location_lookup(pool, "sip:e1@h"));  /* still known: 480 */
    ck_assert_ptr_nonnull(sip_location_lookup(pool, "sip:e2@h"));
    ck_assert_int_eq(sip_location_lookup(pool, "sip:e3@h")->nelts, 1);
    ck_assert_ptr_nonnull(sip_location_lookup(pool, "sip:e4@h"));
    max_bindings = 0;               /* no limit */
    for (i = 5; i < 10; i++) {
        snprintf(aor, sizeof(aor), "sip:e%d@h", i);
        entry_for(apr_pstrdup(pool, aor), 1);
    }
    forget_excess_empty();
    ck_assert_uint_eq(nempty, 8);
    sip_location_remove_all("sip:e3@h");
}
END_TEST

static Suite *location_suite(void)
{
    Suite *s = suite_create("registrar_location");
    TCase *tc = tcase_create("pure");
    TCase *ts = tcase_create("store");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, qvalue_grammar);
    tcase_add_test(tc, uri_key_matches_uri_equal);
    tcase_add_test(tc, journal_escapes);
    tcase_add_test(tc, journal_line_parsing);
    suite_add_tcase(s, tc);
    tcase_add_checked_fixture(ts, store_setup, pool_teardown);
    tcase_set_timeout(ts, 30);
    tcase_add_test(ts, store_one_binding_per_equal_uri);
    tcase_add_test(ts, store_many_bindings_in_one_aor);
    tcase_add_test(ts, reg_check_limits);
    tcase_add_test(ts, store_forgets_oldest_empty_aors);
    suite_add_tcase(s, ts);
    return s;
}

/* ================================================================== */

/* ------------------------------------------------------------------ */
/* sip_relay_method_known: SIP's registered methods and SipProxyMethods */

START_TEST(relay_methods)
{
    sip_server_conf c;
    const char *m;

    memset(&c, 0, sizeof(c));
    ck_assert(sip_relay_method_known(&c, "INVITE"));
    ck_assert(sip_relay_method_known(&c, "PUBLISH"));
    ck_assert(sip_relay_method_known(&c, "PRACK"));
    ck_assert(!sip_relay_method_known(&c, "invite"));  /* methods are case-sensitive */
    ck_assert(!sip_relay_method_known(&c, "GET"));
    ck_assert(!sip_relay_method_known(&c, "INVITEX"));
    ck_assert(!sip_relay_method_known(&c, ""));
    c.proxy_methods = apr_array_make(pool, 1, sizeof(const char *));
    m = "PING";
    *(const char **)apr_array_push(c.proxy_methods) = m;
    ck_assert(sip_relay_method_known(&c, "PING"));
    ck_assert(!sip_relay_method_known(&c, "PIN"));
}
END_TEST

static Suite *relay_suite(void)
{
    Suite *s = suite_create("sip_relay");
    TCase *tc = tcase_create("methods");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, relay_methods);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 9. signed Record-Route (sip_route.c) and forwarding as text          */

#define RS_SECRET "unit-test-route-secret"

static const char *route_value(const char *transport, const char *cid, const char *ftag)
{
    return apr_pstrcat(pool, "<", sip_route_uri(pool, "127.0.0.1:5060", transport, cid, ftag),
                       ">", NULL);
}

START_TEST(route_sign_verify)
{
    const char *v, *t;
    char *bad;

    sip_route_set_secret(RS_SECRET, strlen(RS_SECRET));
    v = route_value("tcp", "cid-1@host", "ft1");
    ck_assert_msg(!strncmp(v, "<sip:127.0.0.1:5060;transport=tcp;lr;ftag=ft1;rs=", 49), "%s", v);
    /* the caller's requests (From tag) and the callee's (To tag) */
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-1@host", "ft1", NULL), 1);
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-1@host", "callee", "ft1"), 1);
    /* as a bare URI too, and with a header parameter after it */
    ck_assert_int_eq(sip_route_verify(pool, apr_pstrndup(pool, v + 1, strlen(v) - 2), "cid-1@host",
                                      "ft1", NULL), 1);
    ck_assert_int_eq(sip_route_verify(pool, apr_pstrcat(pool, v, ";x=y", NULL), "cid-1@host", "ft1",
                                      NULL), 1);
    /* another dialog */
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-2@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-1@host", "ft2", "tt2"), 0);
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-1@host", NULL, NULL), 0);
    /* tampered hash, transport, address, tag; the hash missing */
    bad = apr_pstrdup(pool, v);
    t = strstr(bad, ";rs=") + 4;
    bad[t - bad] = bad[t - bad] == '0' ? '1' : '0';
    ck_assert_int_eq(sip_route_verify(pool, bad, "cid-1@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, apr_pstrcat(pool, "<sip:127.0.0.1:5060;lr;ftag=ft1",
                                                        strstr(v, ";rs="), NULL),
                                      "cid-1@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, apr_pstrcat(pool, "<sip:127.0.0.1:5061;transport=tcp;lr;ftag=ft1",
                                                        strstr(v, ";rs="), NULL),
                                      "cid-1@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, apr_pstrcat(pool, "<sip:127.0.0.1:5060;transport=tcp;lr;ftag=ft2",
                                                        strstr(v, ";rs="), NULL),
                                      "cid-1@host", "ft2", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, "<sip:127.0.0.1:5060;transport=tcp;lr;ftag=ft1>",
                                      "cid-1@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, "<sip:127.0.0.1:5060;lr>", "cid-1@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, "garbage", "cid-1@host", "ft1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, "<sip:127.0.0.1:5060;lr;ftag=ft1;rs=", "cid-1@host",
                                      "ft1", NULL), 0);
    /* another server's secret */
    sip_route_set_secret("another-secret-of-16", 20);
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-1@host", "ft1", NULL), 0);
    sip_route_set_secret(RS_SECRET, strlen(RS_SECRET));
    ck_assert_int_eq(sip_route_verify(pool, v, "cid-1@host", "ft1", NULL), 1);
    /* a tag with characters a URI parameter cannot hold is escaped */
    v = route_value(NULL, "c", "a`b%c");
    ck_assert_ptr_nonnull(strstr(v, ";ftag=a%60b%25c;"));
    ck_assert_int_eq(sip_route_verify(pool, v, "c", "a`b%c", NULL), 1);
    ck_assert_int_eq(sip_route_verify(pool, v, "c", "a%60b%25c", NULL), 0);
    /* a From without a tag (RFC 2543): no empty ftag parameter */
    v = route_value(NULL, "c", NULL);
    ck_assert_ptr_null(strstr(v, "ftag"));
    ck_assert_int_eq(sip_route_verify(pool, v, "c", NULL, NULL), 1);
    ck_assert_int_eq(sip_route_verify(pool, v, "c", "t1", NULL), 0);
    ck_assert_int_eq(sip_route_verify(pool, v, "c2", NULL, NULL), 0);
    /* transport */
    ck_assert_str_eq(sip_route_transport(pool, route_value("tcp", "c", "f")), "tcp");
    ck_assert_ptr_null(sip_route_transport(pool, route_value(NULL, "c", "f")));
}
END_TEST

static sip_msg_t *parse_ok(const char *text)
{
    sip_msg_t *m = NULL;
    sip_msg_error_t err;

    ck_assert_msg(sip_msg_parse(pool, text, strlen(text), NULL, 1, &m, &err) == APR_SUCCESS,
                  "parse: %s", err.reason);
    return m;
}

START_TEST(wire_request_edits)
{
    static const char in[] =
        "INVITE sip:bob@a.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9:5099;rport;branch=z9hG4bKabc\r\n"
        "Max-forwards: 10\r\n"
        "Route: <sip:127.0.0.1:5060;lr>,  <sip:other.example;lr>\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>\r\n"
        "i: cid1\r\n"
        "CSeq: 1 INVITE\r\n"
        "User-agent: X\r\n"
        "Allow: A, B, C\r\n"
        "Authorization: Digest username=\"alice\", realm=\"ours\", nonce=\"n\", uri=\"sip:bob@a.example\", response=\"r\"\r\n"
        "Proxy-Authorization: Digest realm=\"theirs\", username=\"alice\", nonce=\"n\"\r\n"
        "Proxy-Authorization: Digest username=\"x, realm=\\\"ours\", realm=theirs2, nonce=\"n\"\r\n"
        "Proxy-Authorization: Digest username=\"y\", realm=ours\r\n"
        "Subject: folded\r\n"
        " line\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length:   4\r\n"
        "\r\n"
        "abcdEXTRA";
    static const char want[] =
        "INVITE sip:bob@b.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9:5099;rport=5099;branch=z9hG4bKabc;received=192.0.2.9\r\n"
        "Record-Route: <sip:rr.example;lr>\r\n"
        "Max-forwards: 9\r\n"
        "Route: <sip:other.example;lr>\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>\r\n"
        "i: cid1\r\n"
        "CSeq: 1 INVITE\r\n"
        "User-agent: X\r\n"
        "Allow: A, B, C\r\n"
        "Proxy-Authorization: Digest realm=\"theirs\", username=\"alice\", nonce=\"n\"\r\n"
        "Proxy-Authorization: Digest username=\"x, realm=\\\"ours\", realm=theirs2, nonce=\"n\"\r\n"
        "Subject: folded\r\n"
        " line\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length:   4\r\n"
        "\r\n"
        "abcd";
    static const char *const rr[] = {"<sip:rr.example;lr>", NULL};
    sip_msg_t *m = parse_ok(in);
    sip_source_t src;
    sip_sockaddr_t dest;
    sip_wire_edit_t e;
    const char *out;
    apr_size_t len = 0;

    memset(&src, 0, sizeof(src));
    src.kind = SIP_TP_UDP;
    ck_assert_int_eq(sip_sockaddr_set(&src.peer, "192.0.2.9", 5099), APR_SUCCESS);
    sip_msg_stamp_via(m, &src, &dest);
    sip_msg_remove_route(m, 0);                 /* route preprocessing: ours */
    ck_assert_int_eq(sip_msg_routes_removed(m), 1);
    ck_assert_str_eq(sip_msg_removed_route(pool, m, 0), "<sip:127.0.0.1:5060;lr>");
    memset(&e, 0, sizeof(e));
    e.request_uri = "sip:bob@b.example";
    e.via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport";
    e.max_forwards = 1;
    e.record_route = rr;
    e.realm = "ours";
    out = sip_msg_wire_text(pool, m, &e, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_str_eq(out, want);
    /* what goes out parses as the same request */
    parse_ok(out);
}
END_TEST

START_TEST(wire_stamp_rport_spacing)
{
    static const char in[] =
        "OPTIONS sip:bob@a.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9:5099;xrport=1 ; RPort ;branch=z9hG4bKabc, SIP/2.0/UDP b\r\n"
        "Max-Forwards: 10\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\n"
        "CSeq: 1 OPTIONS\r\n\r\n";
    sip_msg_t *m = parse_ok(in);
    sip_source_t src;
    sip_sockaddr_t dest;
    sip_wire_edit_t e;
    apr_size_t len = 0;
    const char *out;

    memset(&src, 0, sizeof(src));
    src.kind = SIP_TP_UDP;
    ck_assert_int_eq(sip_sockaddr_set(&src.peer, "198.51.100.2", 6000), APR_SUCCESS);
    sip_msg_stamp_via(m, &src, &dest);
    memset(&e, 0, sizeof(e));
    out = sip_msg_wire_text(pool, m, &e, &len);
    ck_assert_msg(strstr(out, "\r\nVia: SIP/2.0/UDP 192.0.2.9:5099;xrport=1 ; rport=6000;"
                                      "branch=z9hG4bKabc;received=198.51.100.2, SIP/2.0/UDP b\r\n") != NULL, "%s", out);
}
END_TEST

/* A received parameter the client sent is overwritten with the source
 * address, in the parsed Via (where responses go) and in the text. */
START_TEST(wire_stamp_received_forged)
{
    static const char in[] =
        "OPTIONS sip:bob@a.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9:5099;received=203.0.113.7 ;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 10\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\n"
        "CSeq: 1 OPTIONS\r\n\r\n";
    sip_msg_t *m = parse_ok(in);
    sip_source_t src;
    sip_sockaddr_t dest;
    sip_wire_edit_t e;
    apr_size_t len = 0;
    const char *out;

    memset(&src, 0, sizeof(src));
    src.kind = SIP_TP_UDP;
    ck_assert_int_eq(sip_sockaddr_set(&src.peer, "198.51.100.2", 6000), APR_SUCCESS);
    sip_msg_stamp_via(m, &src, &dest);
    ck_assert_str_eq(sip_sockaddr_ip(pool, &dest), "198.51.100.2");
    ck_assert_int_eq(sip_sockaddr_port(&dest), 5099);
    memset(&e, 0, sizeof(e));
    out = sip_msg_wire_text(pool, m, &e, &len);
    ck_assert_msg(strstr(out, "\r\nVia: SIP/2.0/UDP 192.0.2.9:5099;received=198.51.100.2;"
                              "branch=z9hG4bKabc\r\n") != NULL, "%s", out);
}
END_TEST

START_TEST(wire_request_routes)
{
    static const char in[] =
        "BYE sip:bob@10.0.0.2 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.9:5099;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>\r\n"
        "Route: <sip:strict.example>\r\n"
        "Record-Route: <sip:p2.example;lr>\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>;tag=tt1\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 2 BYE\r\n"
        "\r\n";
    static const char want[] =
        "BYE sip:strict.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP me;branch=z9hG4bKy\r\n"
        "Via: SIP/2.0/TCP 192.0.2.9:5099;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 69\r\n"
        "Route: <sip:bob@10.0.0.2>\r\n"
        "Record-Route: <a>\r\n"
        "Record-Route: <b>\r\n"
        "Record-Route: <sip:p2.example;lr>\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>;tag=tt1\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 2 BYE\r\n"
        "Content-Length: 0\r\n"
        "\r\n";
    static const char *const rr[] = {"<a>", "<b>", NULL};
    sip_msg_t *m = parse_ok(in);
    sip_wire_edit_t e;
    const char *out;
    apr_size_t len = 0;

    /* double Record-Route of ours removed (RFC 5658), then a strict next
     * hop (§16.6 step 6): Request-URI to the end of the Route set */
    sip_msg_remove_route(m, 0);
    sip_msg_remove_route(m, 0);
    ck_assert_str_eq(sip_msg_removed_route(pool, m, 1), "<sip:127.0.0.1:5060;lr>");
    memset(&e, 0, sizeof(e));
    e.request_uri = "sip:strict.example";
    e.route_drop = 1;
    e.route_append = "<sip:bob@10.0.0.2>";
    e.via = "SIP/2.0/UDP me;branch=z9hG4bKy";
    e.max_forwards = 1;
    e.record_route = rr;
    out = sip_msg_wire_text(pool, m, &e, &len);
    ck_assert_str_eq(out, want);
    ck_assert_str_eq(sip_msg_top_record_route(pool, m), "<sip:p2.example;lr>");
}
END_TEST

START_TEST(wire_response_pop_via)
{
    static const char in[] =
        "SIP/2.0 180 Ringing\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKmine , SIP/2.0/UDP 192.0.2.9;branch=b2\r\n"
        "v: SIP/2.0/TCP c.example;branch=b3\r\n"
        "from: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>;tag=tt1\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Allow: A, B\r\n"
        "Content-Length: 0\r\n"
        "\r\n";
    static const char in2[] =
        "SIP/2.0 503 Busy Here\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKmine\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9;branch=b2\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>;tag=tt1\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n"
        "\r\n";
    sip_wire_edit_t e;
    const char *out;
    apr_size_t len = 0;

    memset(&e, 0, sizeof(e));
    e.pop_via = 1;
    out = sip_msg_wire_text(pool, parse_ok(in), &e, &len);
    ck_assert_str_eq(out,
        "SIP/2.0 180 Ringing\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9;branch=b2\r\n"
        "v: SIP/2.0/TCP c.example;branch=b3\r\n"
        "from: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>;tag=tt1\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Allow: A, B\r\n"
        "Content-Length: 0\r\n"
        "\r\n");
    e.status = 500;
    e.reason = "Server Internal Error";
    e.extra = "WWW-Authenticate: Digest realm=\"x\"\r\n";
    out = sip_msg_wire_text(pool, parse_ok(in2), &e, &len);
    ck_assert_str_eq(out,
        "SIP/2.0 500 Server Internal Error\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9;branch=b2\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>;tag=tt1\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n"
        "WWW-Authenticate: Digest realm=\"x\"\r\n"
        "\r\n");
}
END_TEST

START_TEST(route_no_duplicate_rr)
{
    const char *me = "127.0.0.1:5060";
    const char *ours_udp, *ours_tcp, *text;
    const char *const *v;
    sip_msg_t *m;

    sip_route_set_secret(RS_SECRET, strlen(RS_SECRET));
    ours_udp = apr_pstrcat(pool, "<", sip_route_uri(pool, me, NULL, "cid1", "ft1"), ">", NULL);
    ours_tcp = apr_pstrcat(pool, "<", sip_route_uri(pool, me, "tcp", "cid1", "ft1"), ">", NULL);
    text = apr_pstrcat(pool,
        "INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKmSx.1\r\n"
        "Max-Forwards: 69\r\n"
        "Record-Route: ", ours_udp, "\r\n"
        "From: <sip:alice@a.example>;tag=ft1\r\n"
        "To: <sip:bob@a.example>\r\n"
        "Call-ID: cid1\r\n"
        "CSeq: 1 INVITE\r\n\r\n", NULL);
    m = parse_ok(text);
    /* a spiral over UDP: our value is on top already */
    ck_assert_ptr_null(record_route_values(pool, m, NULL, me, SIP_TP_UDP, 0, SIP_TP_UDP, 0));
    /* in over UDP (value there), out over TCP: only the TCP one added */
    v = record_route_values(pool, m, NULL, me, SIP_TP_UDP, 0, SIP_TP_TCP, 0);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(v[0], ours_tcp);
    ck_assert_ptr_null(v[1]);
    /* in over TCP, out over UDP: both, the side facing the next hop on top */
    v = record_route_values(pool, m, NULL, me, SIP_TP_TCP, 0, SIP_TP_UDP, 0);
    ck_assert_str_eq(v[0], ours_udp);
    ck_assert_str_eq(v[1], ours_tcp);
    ck_assert_ptr_null(v[2]);
}
END_TEST

/* A request with these Route values and tags, parsed. */
static sip_msg_t *routed_request(const char *routes, const char *cid, const char *ftag,
                                 const char *ttag)
{
    return parse_ok(apr_pstrcat(pool,
        "BYE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.8:5070;branch=z9hG4bKrp\r\n"
        "Max-Forwards: 70\r\n",
        routes ? "Route: " : "", routes ? routes : "", routes ? "\r\n" : "",
        "From: <sip:a@x>;tag=", ftag, "\r\n"
        "To: <sip:b@y>", ttag ? ";tag=" : "", ttag ? ttag : "", "\r\n"
        "Call-ID: ", cid, "\r\n"
        "CSeq: 2 BYE\r\n\r\n", NULL));
}

START_TEST(route_preprocess_kinds)
{
    server_rec vhost;
    const char *udp, *tcp, *forged;
    sip_msg_t *m;

    /* no UDP socket here: every address counts as ours */
    memset(&vhost, 0, sizeof(vhost));
    udps = apr_array_make(pool, 1, sizeof(sip_udp_t *));
    sip_proxy_init(pool);
    sip_route_set_secret(RS_SECRET, strlen(RS_SECRET));
    udp = route_value(NULL, "cid1", "ft1");
    tcp = route_value("tcp", "cid1", "ft1");

    m = routed_request(NULL, "cid1", "ft1", "tt1");
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_NONE);
    /* the caller's in-dialog request, and the callee's (tags swapped) */
    m = routed_request(udp, "cid1", "ft1", "tt1");
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_RECORDED);
    ck_assert_int_eq(sip_msg_route_count(m), 0);
    m = routed_request(udp, "cid1", "tt1", "ft1");
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_RECORDED);
    /* both values of a double Record-Route removed and verified; the
     * second one's transport is the next hop's */
    m = routed_request(apr_pstrcat(pool, udp, ", ", tcp, NULL), "cid1", "tt1", "ft1");
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_RECORDED);
    ck_assert_int_eq(sip_msg_routes_removed(m), 2);
    ck_assert_str_eq(recorded_transport(pool, m), "tcp");
    /* preloaded, forged, for another dialog, tampered: ours, not recorded */
    m = routed_request("<sip:127.0.0.1:5060;lr>", "cid1", "ft1", NULL);
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_OURS);
    ck_assert_ptr_null(recorded_transport(pool, m));
    m = routed_request(udp, "cid2", "ft1", "tt1");
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_OURS);
    m = routed_request(udp, "cid1", "ft9", "tt9");
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_OURS);
    forged = apr_pstrcat(pool, apr_pstrndup(pool, tcp, strlen(tcp) - 2), "0>", NULL);
    if (!strcmp(forged, tcp))
        forged = apr_pstrcat(pool, apr_pstrndup(pool, tcp, strlen(tcp) - 2), "1>", NULL);
    m = routed_request(forged, "cid1", "ft1", NULL);
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_OURS);
    ck_assert_ptr_null(recorded_transport(pool, m));
    /* one signed, one not (a phone's outbound proxy setting in front of
     * the recorded route): the signed one proves the dialog */
    m = routed_request(apr_pstrcat(pool, "<sip:127.0.0.1:5060;lr>, ", udp, NULL),
                       "cid1", "ft1", NULL);
    ck_assert_int_eq(sip_proxy_route_preprocess(m, &vhost), SIP_ROUTE_RECORDED);
    udps = NULL;
}
END_TEST

static Suite *route_suite(void)
{
    Suite *s = suite_create("route_wire");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, route_sign_verify);
    tcase_add_test(tc, wire_request_edits);
    tcase_add_test(tc, wire_request_routes);
    tcase_add_test(tc, wire_stamp_rport_spacing);
    tcase_add_test(tc, wire_stamp_received_forged);
    tcase_add_test(tc, wire_response_pop_via);
    tcase_add_test(tc, route_no_duplicate_rr);
    tcase_add_test(tc, route_preprocess_kinds);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* 9. transport limits: rate-limited log lines, cutting long lines     */

START_TEST(ratelog_per_source_and_kind)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("test lines");
    int i, passed = 0;

    sip_log_rate_setup(3, apr_time_from_msec(300));
    for (i = 0; i < 10; i++)
        passed += sip_log_limited(&rl, "192.0.2.1", 420, APLOG_INFO, NULL, "line %d", i);
    ck_assert_int_eq(passed, 3);
    /* another source, and another kind from the same one: their own allowance */
    ck_assert_int_eq(sip_log_limited(&rl, "192.0.2.2", 420, APLOG_INFO, NULL, "other"), 1);
    ck_assert_int_eq(sip_log_limited(&rl, "192.0.2.1", 404, APLOG_INFO, NULL, "404"), 1);
    /* after the interval: through again, the held-back count reported once */
    apr_sleep(apr_time_from_msec(350));
    ck_assert_int_eq(sip_log_limited(&rl, "192.0.2.1", 420, APLOG_INFO, NULL, "again"), 1);
    ck_assert_uint_eq(rl.slot[rate_slot_of("192.0.2.1", 420)].held_before, 0);
    sip_log_rate_setup(SIP_DEFAULT_LOG_RATE_BURST, SIP_DEFAULT_LOG_RATE_INTERVAL);
}
END_TEST

START_TEST(ratelog_all_sources_cap)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("test lines");
    int i, passed = 0;

    sip_log_rate_setup(2, apr_time_from_sec(60));
    /* 1000 spoofed sources: at most 10 x 2 lines, and no memory grows */
    for (i = 0; i < 1000; i++) {
        char src[32];
        apr_snprintf(src, sizeof(src), "10.0.%d.%d", i / 256, i % 256);
        passed += sip_log_limited(&rl, src, 400, APLOG_INFO, NULL, "bad from %s", src);
    }
    ck_assert_int_eq(passed, 20);
    /* no limit at all with 0 */
    sip_log_rate_setup(0, apr_time_from_sec(60));
    for (i = 0, passed = 0; i < 50; i++)
        passed += sip_log_limited(&rl, "10.9.9.9", 400, APLOG_INFO, NULL, "x");
    ck_assert_int_eq(passed, 50);
    sip_log_rate_setup(SIP_DEFAULT_LOG_RATE_BURST, SIP_DEFAULT_LOG_RATE_INTERVAL);
}
END_TEST

/* A connection whose input buffer holds 'text', with small line limits. */
static sip_tcp_conn_t *trim_conn(const char *text)
{
    sip_tcp_conn_t *c = apr_pcalloc(pool, sizeof(*c));
    c->in_len = strlen(text);
    c->in_cap = c->in_len + 1;
    c->in = apr_pmemdup(pool, text, c->in_len + 1);
    c->lim.max_line = 30;
    c->lim.max_field = 16;
    return c;
}

START_TEST(trim_long_lines)
{
    sip_tcp_conn_t *c;

    /* nothing over the limits: untouched */
    c = trim_conn("OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\nbody-not-a-line-to-cut");
    ck_assert_int_eq(tcp_trim_long_lines(c), 0);
    ck_assert_int_eq(c->trimmed, 0);
    /* a long start line and a long header: limit + 1 bytes kept, line ends kept */
    c = trim_conn("OPTIONS sip:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@b SIP/2.0\r\n"
                  "X-Long: 0123456789abcdef\r\nCSeq: 1 OPTIONS\r\n\r\n");
    ck_assert_int_eq(tcp_trim_long_lines(c), 1);
    ck_assert_int_eq(c->trimmed, 1);
    ck_assert_int_eq(c->skip_line, 0);
    c->in[c->in_len] = '\0';
    ck_assert_str_eq(c->in, "OPTIONS sip:aaaaaaaaaaaaaaaaaaa\nX-Long: 012345678\nCSeq: 1 OPTIONS\r\n\r\n");
    /* an unfinished long line: cut, and the rest of it is to be skipped */
    c = trim_conn("OPTIONS sip:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    ck_assert_int_eq(tcp_trim_long_lines(c), 1);
    ck_assert_int_eq(c->skip_line, 1);
    ck_assert_uint_eq(c->in_len, 31);
}
END_TEST

static Suite *limits_suite(void)
{
    Suite *s = suite_create("transport_limits");
    TCase *tc = tcase_create("limits");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, ratelog_per_source_and_kind);
    tcase_add_test(tc, ratelog_all_sources_cap);
    tcase_add_test(tc, trim_long_lines);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* digest nonce-counts (sip_nonce.c): the highest count per nonce, in a
 * table every engine shares; a full bucket refuses new nonces rather than
 * forget live ones, and stale nonces' slots are taken again */

START_TEST(nonce_count_table)
{
    apr_time_t now = apr_time_now(), live = now + apr_time_from_sec(300);
    char nonce[16];
    int i;

    /* one bucket: every nonce meets every other */
    ck_assert_int_eq(sip_nonce_attach(pool, pool, 10), APR_SUCCESS);
    ck_assert(sip_nonce_attached());
    ck_assert_uint_eq(sip_nonce_slots(), SIP_NONCE_BUCKET);
    ck_assert_int_eq(sip_nonce_count("n0", 1, live, now), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("n0", 1, live, now), SIP_NC_REPLAY);
    ck_assert_int_eq(sip_nonce_count("n0", 0, live, now), SIP_NC_REPLAY);
    ck_assert_int_eq(sip_nonce_count("n0", 3, live, now), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("n0", 2, live, now), SIP_NC_REPLAY);
    /* one slot goes stale sooner than the others */
    ck_assert_int_eq(sip_nonce_count("soon", 1, now + 10, now), SIP_NC_FRESH);
    for (i = 2; i < SIP_NONCE_BUCKET; i++) {
        apr_snprintf(nonce, sizeof(nonce), "n%d", i);
        ck_assert_int_eq(sip_nonce_count(nonce, 1, live, now), SIP_NC_FRESH);
    }
    /* full: a new nonce is refused, the live ones keep their counts */
    ck_assert_int_eq(sip_nonce_count("new", 1, live, now), SIP_NC_FULL);
    ck_assert_int_eq(sip_nonce_count("n0", 3, live, now), SIP_NC_REPLAY);
    ck_assert_int_eq(sip_nonce_count("n0", 4, live, now), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("soon", 1, now + 10, now), SIP_NC_REPLAY);
    /* once "soon" is stale its slot is the new nonce's */
    ck_assert_int_eq(sip_nonce_count("new", 1, live, now + 10), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("new", 1, live, now + 10), SIP_NC_REPLAY);
    ck_assert_int_eq(sip_nonce_count("other", 1, live, now + 10), SIP_NC_FULL);
    /* a slot still holding a stale-looking nonce is that nonce's (another
     * vhost's SipNonceLifetime may be longer): its count is not reset */
    ck_assert_int_eq(sip_nonce_attach(pool, pool, 32), APR_SUCCESS);
    ck_assert_int_eq(sip_nonce_count("long", 5, now + 10, now), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("long", 5, live, now + 20), SIP_NC_REPLAY);
    ck_assert_int_eq(sip_nonce_count("long", 6, live, now + 20), SIP_NC_FRESH);
}
END_TEST

/* The parent's table outlives an engine (the same pool attached again,
 * as after a graceful restart) and a change of size keeps live counts. */
START_TEST(nonce_count_shared)
{
    apr_time_t now = apr_time_now(), live = now + apr_time_from_sec(300);
    apr_pool_t *pp;
    pid_t pid;
    int status;

    apr_pool_create(&pp, pool);
    ck_assert_int_eq(sip_nonce_attach(pp, pp, 64), APR_SUCCESS);
    ck_assert_int_eq(sip_nonce_count("a", 1, live, now), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("gone", 1, now + 1, now), SIP_NC_FRESH);
    /* an engine (a forked child) records a count the parent then sees */
    pid = fork();
    if (pid == 0)
        _exit(sip_nonce_count("a", 2, live, now) == SIP_NC_FRESH ? 0 : 1);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(sip_nonce_count("a", 2, live, now), SIP_NC_REPLAY);
    /* an engine killed holding a bucket's lock does not block the others */
    pid = fork();
    if (pid == 0) {
        bucket_lock(&table->bucket[nonce_hash("a") % table->buckets]);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(sip_nonce_count("a", 3, live, now), SIP_NC_FRESH);
    /* attached again with the same size: the same counts */
    ck_assert_int_eq(sip_nonce_attach(pp, pp, 64), APR_SUCCESS);
    ck_assert_int_eq(sip_nonce_count("a", 3, live, now), SIP_NC_REPLAY);
    /* another size: a new table with the live counts, not the stale ones */
    ck_assert_int_eq(sip_nonce_attach(pp, pp, 4096), APR_SUCCESS);
    ck_assert_uint_eq(sip_nonce_slots(), 4096);
    ck_assert_int_eq(sip_nonce_count("a", 3, live, now + 2), SIP_NC_REPLAY);
    ck_assert_int_eq(sip_nonce_count("a", 4, live, now + 2), SIP_NC_FRESH);
    ck_assert_int_eq(sip_nonce_count("gone", 1, live, now + 2), SIP_NC_FRESH);
    /* its pool gone, no table: everything is refused */
    apr_pool_destroy(pp);
    ck_assert(!sip_nonce_attached());
    ck_assert_int_eq(sip_nonce_count("a", 9, live, now), SIP_NC_FULL);
    /* SipNonceCounts */
    {
        long n = 0;
        ck_assert_ptr_null(sip_nonce_parse_slots("1000", &n));
        ck_assert_int_eq(n, 1000);
        ck_assert_ptr_nonnull(sip_nonce_parse_slots("15", &n));
        ck_assert_ptr_nonnull(sip_nonce_parse_slots("16777217", &n));
        ck_assert_ptr_nonnull(sip_nonce_parse_slots("1k", &n));
    }
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("sip_auth");
    TCase *tc = tcase_create("nonce_count");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, nonce_count_table);
    tcase_add_test(tc, nonce_count_shared);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* sip_upload: the #! allowlist, the sandbox command line              */

static apr_array_header_t *allow(const char *a, const char *b)
{
    apr_array_header_t *arr = apr_array_make(pool, 2, sizeof(const char *));
    if (a)
        APR_ARRAY_PUSH(arr, const char *) = a;
    if (b)
        APR_ARRAY_PUSH(arr, const char *) = b;
    return arr;
}

static int interp_ok(const char *body, const char **interp, const char **arg, const char **why)
{
    return sip_upload_interpreter_ok(pool, body, strlen(body), allow("/bin/sh", "/usr/bin/perl"),
                                     interp, arg, why);
}

START_TEST(upload_interpreter)
{
    const char *interp, *arg, *why;
    char longline[400];

    ck_assert(interp_ok("#!/bin/sh\necho\n", &interp, &arg, &why));
    ck_assert_str_eq(interp, "/bin/sh");
    ck_assert_ptr_null(arg);
    /* spaces after #!, one argument, CRLF */
    ck_assert(interp_ok("#! /usr/bin/perl -w\r\nprint 1;\n", &interp, &arg, &why));
    ck_assert_str_eq(interp, "/usr/bin/perl");
    ck_assert_str_eq(arg, "-w");
    ck_assert(interp_ok("#!/usr/bin/perl\t-T \t\n", &interp, &arg, &why));
    ck_assert_str_eq(arg, "-T");
    /* exact match only: no other program, no prefix, no relative name */
    ck_assert(!interp_ok("#!/usr/bin/python3\nprint()\n", &interp, &arg, &why));
    ck_assert(strstr(why, "/usr/bin/python3") != NULL);
    ck_assert(!interp_ok("#!/bin/shx\n", &interp, &arg, &why));
    ck_assert(!interp_ok("#!/bin/sh/../../usr/bin/python3\n", &interp, &arg, &why));
    ck_assert(!interp_ok("#!sh\n", &interp, &arg, &why));
    ck_assert(!interp_ok("#!/BIN/SH\n", &interp, &arg, &why));
    /* no #! line, an empty one, none at all */
    ck_assert(!interp_ok("echo hi\n", &interp, &arg, &why));
    ck_assert(!interp_ok("#!\n", &interp, &arg, &why));
    ck_assert(!interp_ok("", &interp, &arg, &why));
    ck_assert(!interp_ok("#", &interp, &arg, &why));
    ck_assert(!interp_ok(" #!/bin/sh\n", &interp, &arg, &why));
    /* a line without its end (the kernel reads 255 bytes) */
    ck_assert(!interp_ok("#!/bin/sh", &interp, &arg, &why));
    memset(longline, ' ', sizeof(longline));
    memcpy(longline, "#!/bin/sh", 9);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    ck_assert(!interp_ok(longline, &interp, &arg, &why));
    /* two arguments would be one for Linux: refused */
    ck_assert(!interp_ok("#!/usr/bin/perl -w -T\n", &interp, &arg, &why));
    ck_assert(strstr(why, "one argument") != NULL);
    /* a NUL inside the line */
    ck_assert(!sip_upload_interpreter_ok(pool, "#!/bin/sh\0x\n", 12, allow("/bin/sh", NULL),
                                         &interp, &arg, &why));
    /* nothing allowed */
    ck_assert(!sip_upload_interpreter_ok(pool, "#!/bin/sh\n", 10, allow(NULL, NULL), &interp,
                                         &arg, &why));
    ck_assert(!sip_upload_interpreter_ok(pool, "#!/bin/sh\n", 10, NULL, &interp, &arg, &why));
}
END_TEST

static int argv_has(char **argv, const char *a, const char *b)
{
    int i;
    for (i = 0; argv[i]; i++)
        if (!strcmp(argv[i], a) && (!b || (argv[i + 1] && !strcmp(argv[i + 1], b))))
            return i;
    return -1;
}

START_TEST(upload_command)
{
    sip_upload_conf_t c;
    const char *limits[3] = {"1:2", NULL, "10:10"};
    const char *wd = sip_upload_workdir(pool, "/var/lib/mod_sip/work", "sip:alice@example.com");
    char **argv;
    int n, i;

    /* the directory is a hash of the AoR, never its text */
    ck_assert_str_eq(wd, "/var/lib/mod_sip/work/39825720921e2b51f78742820d87ef48b3723b13");
    ck_assert(strstr(wd, "alice") == NULL);
    ck_assert_str_ne(wd, sip_upload_workdir(pool, "/var/lib/mod_sip/work", "sip:bob@example.com"));

    memset(&c, 0, sizeof(c));
    c.user = "sipup";
    c.suexec = "/usr/lib/apache2/sip-suexec";
    c.sandbox = 1;
    argv = sip_upload_argv(pool, &c, wd, limits, "/usr/bin/perl", "-w");
    for (n = 0; argv[n]; n++)
        ;
    ck_assert_str_eq(argv[0], c.suexec);
    ck_assert_str_eq(argv[1], "sipup");
    ck_assert_str_eq(argv[2], wd);
    ck_assert_str_eq(argv[3], "1:2");
    ck_assert_str_eq(argv[4], "-");
    ck_assert_str_eq(argv[5], "10:10");
    ck_assert_str_eq(argv[6], SIP_BWRAP_PATH);
    ck_assert_int_gt(argv_has(argv, "--unshare-all", NULL), 6);
    ck_assert_int_gt(argv_has(argv, "--die-with-parent", NULL), 6);
    ck_assert_int_gt(argv_has(argv, "--new-session", NULL), 6);
    ck_assert_int_gt(argv_has(argv, "--cap-drop", "ALL"), 6);
    ck_assert_int_gt(argv_has(argv, "--ro-bind", "/usr"), 6);
    ck_assert_int_gt(argv_has(argv, "--ro-bind-data", "3"), 6);
    ck_assert_int_gt(argv_has(argv, "--chdir", SIP_UPLOAD_SANDBOX_WORK), 6);
    i = argv_has(argv, "--bind", wd);
    ck_assert_int_gt(i, 6);
    ck_assert_str_eq(argv[i + 2], SIP_UPLOAD_SANDBOX_WORK);
    /* the only writable bind is the user's own directory; nothing of /etc
     * but the loader's cache and the like, never the whole of it */
    for (i = 7; i < n; i++) {
        ck_assert(strcmp(argv[i], "--bind") || !strcmp(argv[i + 1], wd));
        ck_assert(strcmp(argv[i], "/etc"));
        ck_assert(strcmp(argv[i], "/etc/passwd") && strcmp(argv[i], "/etc/shadow"));
        ck_assert(strcmp(argv[i], "--share-net"));
    }
    ck_assert_str_eq(argv[n - 3], "/usr/bin/perl");
    ck_assert_str_eq(argv[n - 2], "-w");
    ck_assert_str_eq(argv[n - 1], SIP_UPLOAD_SANDBOX_SCRIPT);

    /* sandbox Off: the interpreter reads the script from descriptor 3 */
    c.sandbox = 0;
    argv = sip_upload_argv(pool, &c, wd, limits, "/bin/sh", NULL);
    ck_assert_str_eq(argv[6], "/bin/sh");
    ck_assert_str_eq(argv[7], "/dev/fd/3");
    ck_assert_ptr_null(argv[8]);
}
END_TEST

static Suite *upload_suite(void)
{
    Suite *s = suite_create("sip_upload");
    TCase *tc = tcase_create("run");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, upload_interpreter);
    tcase_add_test(tc, upload_command);
    suite_add_tcase(s, tc);
    return s;
}

/* ---------------------------------------------------------------------- */
/* CPL validation at upload (sip_cpl.c, RFC 3880 schema; docs/cpl.md)  */

#define CPL_HEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" \
                 "<cpl xmlns=\"urn:ietf:params:xml:ns:cpl\">\n"

static int cpl_ok(const char *s, const char **why)
{
    *why = NULL;
    return sip_cpl_validate(pool, s, strlen(s), why);
}

/* refused, and the reason mentions 'needle' and is one clean line */
static void cpl_refused(const char *s, const char *needle)
{
    const char *why = NULL, *c;

    ck_assert_msg(!cpl_ok(s, &why), "accepted: %s", s);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strstr(why, needle) != NULL, "why \"%s\" lacks \"%s\"", why, needle);
    for (c = why; *c; c++)
        ck_assert_msg(*c >= 0x20 && *c <= 0x7e, "why has byte 0x%02x", (unsigned char)*c);
    ck_assert_uint_le(strlen(why), 400);
}

START_TEST(cpl_valid_scripts)
{
    /* in the manner of RFC 3880 §12's examples, written for these tests */
    static const char *ok[] = {
        /* unconditional redirect (12.1) */
        CPL_HEAD "<incoming><location url=\"sip:bob@voicemail.example.net\">"
        "<redirect/></location></incoming></cpl>",
        /* forward on busy / no answer through a subaction (12.2) */
        CPL_HEAD "<subaction id=\"vm\"><location url=\"sip:carol@vm.example.net\">"
        "<redirect permanent=\"no\"/></location></subaction>\n<incoming>"
        "<location url=\"sip:carol@desk.example.net\"><proxy timeout=\"8\">"
        "<busy><sub ref=\"vm\"/></busy><noanswer><sub ref=\"vm\"/></noanswer>"
        "</proxy></location></incoming></cpl>",
        /* screening on the caller's host, reject otherwise (12.4) */
        CPL_HEAD "<incoming><address-switch field=\"origin\" subfield=\"host\">"
        "<address subdomain-of=\"example.com\"><lookup source=\"registration\" timeout=\"5\">"
        "<success><proxy ordering=\"first-only\"/></success><notfound><reject status=\"notfound\"/>"
        "</notfound></lookup></address><not-present><reject status=\"reject\" reason=\"who?\"/>"
        "</not-present><otherwise><reject status=\"486\"/></otherwise>"
        "</address-switch></incoming></cpl>",
        /* priority and language (12.5), string switch */
        CPL_HEAD "<incoming><priority-switch><priority greater=\"urgent\">"
        "<location url=\"tel:+15551234\"><proxy/></location></priority><otherwise>"
        "<language-switch><language matches=\"fr\"><location url=\"sip:fr@example.org\">"
        "<proxy/></location></language><otherwise><string-switch field=\"subject\">"
        "<string contains=\"lunch\"><reject status=\"busy\"/></string></string-switch>"
        "</otherwise></language-switch></otherwise></priority-switch></incoming></cpl>",
        /* time of day, outgoing, log and mail (12.6, 12.7, 12.9) */
        CPL_HEAD "<outgoing><time-switch tzid=\"Europe/Paris\"><time dtstart=\"20260105T090000\" "
        "duration=\"PT8H\" freq=\"WEEKLY\" byday=\"MO,TU,WE,TH,FR\" wkst=\"su\">"
        "<log name=\"work\" comment=\"office hours\"><mail url=\"mailto:dave@example.org\"/></log>"
        "</time><otherwise><remove-location location=\"sip:dave@home.example.org\">"
        "<proxy recurse=\"no\"/></remove-location></otherwise></time-switch></outgoing></cpl>",
        /* monthly in capitals (conf/cpl.xsd mends the RFC's [o|N]) */
        CPL_HEAD "<incoming><time-switch><time dtstart=\"20260101T000000\" dtend=\"20260101T010000\" "
        "freq=\"MONTHLY\" count=\"3\"><reject status=\"busy\"/></time></time-switch></incoming></cpl>",
        /* both top-level actions, ancillary, the schemaLocation hint (never fetched) */
        "<?xml version=\"1.0\"?><cpl xmlns=\"urn:ietf:params:xml:ns:cpl\" "
        "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
        "xsi:schemaLocation=\"urn:ietf:params:xml:ns:cpl http://127.0.0.1:9/cpl.xsd\">"
        "<ancillary/><incoming><reject status=\"busy\"/></incoming>"
        "<outgoing><location url=\"sip:x@example.org\" priority=\"0.5\" clear=\"yes\"><proxy/>"
        "</location></outgoing></cpl>",
        /* a prefix instead of the default namespace; no XML declaration */
        "<c:cpl xmlns:c=\"urn:ietf:params:xml:ns:cpl\"><c:incoming><c:reject status=\"busy\"/>"
        "</c:incoming></c:cpl>",
        /* nothing to do is a valid script */
        CPL_HEAD "</cpl>",
        /* subactions referring to earlier ones, no loop */
        CPL_HEAD "<subaction id=\"a\"><reject status=\"busy\"/></subaction>"
        "<subaction id=\"b\"><sub ref=\"a\"/></subaction>"
        "<subaction id=\"c\"><address-switch field=\"origin\"><address is=\"sip:x@y\">"
        "<sub ref=\"b\"/></address><otherwise><sub ref=\"a\"/></otherwise></address-switch></subaction>"
        "<incoming><sub ref=\"c\"/></incoming></cpl>",
    };
    const char *why;
    unsigned i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(cpl_ok(ok[i], &why), "script %u refused: %s", i, why);
}
END_TEST

START_TEST(cpl_malformed)
{
    const char *why;

    cpl_refused("", "not well-formed");
    cpl_refused("hello", "not well-formed");
    cpl_refused(CPL_HEAD "<incoming><reject status=\"busy\"></incoming></cpl>", "not well-formed");
    cpl_refused(CPL_HEAD "<incoming>", "not well-formed");
    cpl_refused(CPL_HEAD "</cpl><cpl/>", "not well-formed");
    cpl_refused(CPL_HEAD "<incoming>&nbsp;</incoming></cpl>", "not well-formed");
    cpl_refused(CPL_HEAD "<incoming a=\"1\" a=\"2\"/></cpl>", "not well-formed");
    /* the length given counts, not a NUL inside */
    ck_assert(!sip_cpl_validate(pool, CPL_HEAD "</cpl>", 20, &why));
    ck_assert(!sip_cpl_validate(pool, "<cpl xmlns=\"urn:ietf:params:xml:ns:cpl\"/>\0<x>", 46, &why));
    ck_assert_ptr_nonnull(strstr(why, "NUL"));
}
END_TEST

START_TEST(cpl_wrong_namespace)
{
    cpl_refused("<cpl><incoming/></cpl>", "namespace urn:ietf:params:xml:ns:cpl");
    cpl_refused("<cpl xmlns=\"urn:ietf:params:xml:ns:cpl-x\"/>", "urn:ietf:params:xml:ns:cpl-x");
    cpl_refused("<script xmlns=\"urn:ietf:params:xml:ns:cpl\"/>", "found <script>");
    /* a CPL root with a foreign child */
    cpl_refused(CPL_HEAD "<incoming><x:proxy xmlns:x=\"urn:example:x\"/></incoming></cpl>",
                "not a valid CPL script");
}
END_TEST

START_TEST(cpl_schema_violations)
{
    /* unknown element */
    cpl_refused(CPL_HEAD "<incoming><explode/></incoming></cpl>", "explode");
    cpl_refused(CPL_HEAD "<sometimes/></cpl>", "not a valid CPL script");
    /* missing required attributes */
    cpl_refused(CPL_HEAD "<incoming><address-switch><otherwise><reject status=\"busy\"/>"
                "</otherwise></address-switch></incoming></cpl>", "'field' is required");
    cpl_refused(CPL_HEAD "<incoming><location><proxy/></location></incoming></cpl>",
                "'url' is required");
    cpl_refused(CPL_HEAD "<incoming><reject/></incoming></cpl>", "'status' is required");
    cpl_refused(CPL_HEAD "<incoming><sub/></incoming></cpl>", "'ref' is required");
    /* values outside the schema's types */
    cpl_refused(CPL_HEAD "<incoming><proxy ordering=\"random\"/></incoming></cpl>", "ordering");
    cpl_refused(CPL_HEAD "<incoming><proxy timeout=\"-3\"/></incoming></cpl>", "timeout");
    cpl_refused(CPL_HEAD "<incoming><location url=\"sip:a@b\" priority=\"2\"><proxy/>"
                "</location></incoming></cpl>", "priority");
    cpl_refused(CPL_HEAD "<incoming><time-switch><time dtstart=\"x\" freq=\"fortnightly\"/>"
                "</time-switch></incoming></cpl>", "freq");
    /* two nodes where one is allowed; outputs in the wrong order */
    cpl_refused(CPL_HEAD "<incoming><reject status=\"busy\"/><redirect/></incoming></cpl>",
                "not a valid CPL script");
    cpl_refused(CPL_HEAD "<incoming><string-switch field=\"subject\"><otherwise/>"
                "<string is=\"a\"/></string-switch></incoming></cpl>", "not a valid CPL script");
    /* text where elements belong; incoming before subaction */
    cpl_refused(CPL_HEAD "<incoming>redirect me</incoming></cpl>", "not a valid CPL script");
    cpl_refused(CPL_HEAD "<incoming/><subaction id=\"a\"/></cpl>", "subactions come first");
    cpl_refused(CPL_HEAD "<incoming/><ancillary/></cpl>", "not a valid CPL script");
}
END_TEST

START_TEST(cpl_rules_refused)
{
    cpl_refused(CPL_HEAD "<incoming/><incoming/></cpl>", "<incoming> appears more than once");
    cpl_refused(CPL_HEAD "<outgoing/><incoming/><outgoing/></cpl>", "<outgoing> appears more");
    cpl_refused(CPL_HEAD "<incoming><sub ref=\"nowhere\"/></incoming></cpl>",
                "<sub ref=\"nowhere\"> names no subaction");
    cpl_refused(CPL_HEAD "<subaction id=\"a\"><reject status=\"busy\"/></subaction>"
                "<subaction id=\"a\"><redirect/></subaction></cpl>", "\"a\" defined twice");
    cpl_refused(CPL_HEAD "<subaction id=\"self\"><sub ref=\"self\"/></subaction></cpl>",
                "recursion");
    cpl_refused(CPL_HEAD "<subaction id=\"a\"><sub ref=\"b\"/></subaction>"
                "<subaction id=\"b\"><address-switch field=\"origin\"><otherwise><sub ref=\"a\"/>"
                "</otherwise></address-switch></subaction><incoming><sub ref=\"a\"/></incoming></cpl>",
                "recursion");
}
END_TEST

START_TEST(cpl_attribute_rules)
{
    const char *why;

    cpl_refused(CPL_HEAD "<incoming><address-switch field=\"origin\"><address/></address-switch>"
                "</incoming></cpl>", "<address> needs exactly one of is, contains, subdomain-of");
    cpl_refused(CPL_HEAD "<incoming><address-switch field=\"origin\" subfield=\"host\">"
                "<address is=\"a\" subdomain-of=\"b\"/></address-switch></incoming></cpl>",
                "exactly one of");
    cpl_refused(CPL_HEAD "<incoming><address-switch field=\"origin\" subfield=\"user\">"
                "<address contains=\"bob\"/></address-switch></incoming></cpl>",
                "<address contains> is for subfield=\"display\" only");
    cpl_refused(CPL_HEAD "<incoming><address-switch field=\"origin\">"
                "<address subdomain-of=\"example.com\"/></address-switch></incoming></cpl>",
                "<address subdomain-of> is for subfield=\"host\" or \"tel\" only");
    ck_assert_msg(cpl_ok(CPL_HEAD "<incoming><address-switch field=\"origin\" subfield=\"display\">"
                         "<address contains=\"Bob\"/></address-switch><address-switch field=\"origin\" "
                         "subfield=\"tel\"><address subdomain-of=\"+1555\"/></address-switch></incoming></cpl>",
                         &why) == 0, "two switches in one node are not CPL");
    ck_assert_msg(cpl_ok(CPL_HEAD "<incoming><address-switch field=\"origin\" subfield=\"display\">"
                         "<address contains=\"Bob\"><address-switch field=\"destination\" subfield=\"tel\">"
                         "<address subdomain-of=\"+1555\"><reject status=\"busy\"/></address>"
                         "</address-switch></address></address-switch></incoming></cpl>", &why), "%s", why);
    cpl_refused(CPL_HEAD "<incoming><priority-switch><priority/></priority-switch></incoming></cpl>",
                "<priority> needs exactly one of less, greater, equal");
    cpl_refused(CPL_HEAD "<incoming><priority-switch><priority less=\"urgent\" equal=\"normal\"/>"
                "</priority-switch></incoming></cpl>", "exactly one of");
    cpl_refused(CPL_HEAD "<incoming><time-switch><time dtstart=\"20260101T000000\"/></time-switch>"
                "</incoming></cpl>", "<time> needs exactly one of dtend, duration");
    cpl_refused(CPL_HEAD "<incoming><time-switch><time dtstart=\"20260101T000000\" dtend=\"20260102T000000\" "
                "duration=\"PT1H\"/></time-switch></incoming></cpl>", "exactly one of dtend, duration");
}
END_TEST

START_TEST(cpl_xxe)
{
    const char *why;
    static const char *xxe[] = {
        "<?xml version=\"1.0\"?><!DOCTYPE cpl [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
        "<cpl xmlns=\"urn:ietf:params:xml:ns:cpl\"><incoming><reject status=\"busy\" "
        "reason=\"&x;\"/></incoming></cpl>",
        "<!DOCTYPE cpl SYSTEM \"http://127.0.0.1:9/cpl.dtd\">"
        "<cpl xmlns=\"urn:ietf:params:xml:ns:cpl\"/>",
        "<!DOCTYPE cpl [<!ENTITY % p SYSTEM \"file:///etc/hostname\"> %p;]>"
        "<cpl xmlns=\"urn:ietf:params:xml:ns:cpl\"/>",
        "<!DOCTYPE cpl><cpl xmlns=\"urn:ietf:params:xml:ns:cpl\"/>",
    };
    unsigned i;

    for (i = 0; i < sizeof(xxe) / sizeof(xxe[0]); i++) {
        cpl_refused(xxe[i], "DOCTYPE");
        ck_assert(!cpl_ok(xxe[i], &why));
        ck_assert_ptr_null(strstr(why, "root:"));
    }
    /* an entity reference without any DTD is just undefined */
    cpl_refused(CPL_HEAD "<incoming><reject status=\"busy\" reason=\"&x;\"/></incoming></cpl>",
                "not well-formed");
}
END_TEST

START_TEST(cpl_billion_laughs)
{
    char *s = apr_pstrdup(pool, "<?xml version=\"1.0\"?><!DOCTYPE cpl [<!ENTITY l0 \"ha\">");
    apr_time_t t0 = apr_time_now();
    int i;

    for (i = 1; i < 30; i++)
        s = apr_psprintf(pool, "%s<!ENTITY l%d \"&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;\">",
                         s, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    s = apr_pstrcat(pool, s, "]><cpl xmlns=\"urn:ietf:params:xml:ns:cpl\"><incoming>"
                    "<reject status=\"busy\" reason=\"&l29;\"/></incoming></cpl>", NULL);
    cpl_refused(s, "DOCTYPE");
    ck_assert_int_lt(apr_time_now() - t0, apr_time_from_sec(1));
}
END_TEST

START_TEST(cpl_limits_refused)
{
    const char *why;
    char *deep, *big;
    int i;

    /* location inside location is valid CPL: only the depth is wrong */
    deep = apr_pstrdup(pool, CPL_HEAD "<incoming>");
    for (i = 0; i < SIP_CPL_MAX_DEPTH; i++)
        deep = apr_pstrcat(pool, deep, "<location url=\"sip:a@b\">", NULL);
    deep = apr_pstrcat(pool, deep, "<proxy/>", NULL);
    for (i = 0; i < SIP_CPL_MAX_DEPTH; i++)
        deep = apr_pstrcat(pool, deep, "</location>", NULL);
    deep = apr_pstrcat(pool, deep, "</incoming></cpl>", NULL);
    cpl_refused(deep, "nested deeper than");

    deep = apr_pstrdup(pool, CPL_HEAD "<incoming>");
    for (i = 0; i < SIP_CPL_MAX_DEPTH - 4; i++)
        deep = apr_pstrcat(pool, deep, "<location url=\"sip:a@b\">", NULL);
    deep = apr_pstrcat(pool, deep, "<proxy/>", NULL);
    for (i = 0; i < SIP_CPL_MAX_DEPTH - 4; i++)
        deep = apr_pstrcat(pool, deep, "</location>", NULL);
    deep = apr_pstrcat(pool, deep, "</incoming></cpl>", NULL);
    ck_assert_msg(cpl_ok(deep, &why), "%s", why);

    /* far deeper than libxml2's own limit: refused, no crash */
    deep = apr_palloc(pool, 100000 * 6 + 1);
    for (i = 0; i < 100000; i++)
        memcpy(deep + i * 6, "<cpl> ", 6);
    deep[100000 * 6] = '\0';
    cpl_refused(deep, "not well-formed");

    /* many elements, each fine */
    big = apr_pstrdup(pool, CPL_HEAD);
    {
        apr_size_t n = 0, cap = (SIP_CPL_MAX_NODES + 10) * 64;
        char *b = apr_palloc(pool, cap);
        n += apr_snprintf(b + n, cap - n, "%s", CPL_HEAD);
        for (i = 0; i < SIP_CPL_MAX_NODES + 5; i++)
            n += apr_snprintf(b + n, cap - n, "<subaction id=\"s%d\"/>", i);
        apr_snprintf(b + n, cap - n, "</cpl>");
        big = b;
    }
    cpl_refused(big, "more than");

    /* size, before any parsing */
    big = apr_palloc(pool, SIP_CPL_MAX_BYTES + 2);
    memset(big, ' ', SIP_CPL_MAX_BYTES + 1);
    big[SIP_CPL_MAX_BYTES + 1] = '\0';
    cpl_refused(big, "larger than");
}
END_TEST

START_TEST(cpl_why_is_clean)
{
    const char *why;
    xmlSchemaPtr first;

    /* an element name with non-ASCII letters, a reason with CR LF */
    cpl_refused(CPL_HEAD "<incoming><\xc3\xa9\xc3\xa9/></incoming></cpl>", "not a valid CPL script");
    cpl_refused("<\xc3\xa9 xmlns=\"urn:ietf:params:xml:ns:cpl\"/>", "found <?" "?>");
    cpl_refused(CPL_HEAD "<incoming><sub ref=\"x&#13;&#10;Via: evil\"/></incoming></cpl>",
                "names no subaction");
    /* the schema is parsed once and kept */
    ck_assert(cpl_ok(CPL_HEAD "</cpl>", &why));
    first = cpl_schema;
    ck_assert_ptr_nonnull(first);
    ck_assert(cpl_ok(CPL_HEAD "</cpl>", &why));
    ck_assert_ptr_eq(cpl_schema, first);
}
END_TEST

static Suite *cpl_suite(void)
{
    Suite *s = suite_create("sip_cpl");
    TCase *tc = tcase_create("validate");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, cpl_valid_scripts);
    tcase_add_test(tc, cpl_malformed);
    tcase_add_test(tc, cpl_wrong_namespace);
    tcase_add_test(tc, cpl_schema_violations);
    tcase_add_test(tc, cpl_rules_refused);
    tcase_add_test(tc, cpl_attribute_rules);
    tcase_add_test(tc, cpl_xxe);
    tcase_add_test(tc, cpl_billion_laughs);
    tcase_add_test(tc, cpl_limits_refused);
    tcase_add_test(tc, cpl_why_is_clean);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- the script store of REGISTER uploads (sip_script_store.c) ---- */

static sip_script_op_t store_op(const char *type, const char *body)
{
    sip_script_op_t op;

    memset(&op, 0, sizeof(op));
    op.type = type;
    op.remove = body == NULL;
    op.content_type = body ? "application/x-perl" : NULL;
    op.body = body;
    op.len = body ? strlen(body) : 0;
    return op;
}

static apr_array_header_t *ops_of(apr_pool_t *p, int n, ...)
{
    apr_array_header_t *a = apr_array_make(p, n ? n : 1, sizeof(sip_script_op_t));
    va_list ap;
    int i;

    va_start(ap, n);
    for (i = 0; i < n; i++)
        *(sip_script_op_t *)apr_array_push(a) = va_arg(ap, sip_script_op_t);
    va_end(ap);
    return a;
}

static char *store_tmpdir(apr_pool_t *p)
{
    char *dir = apr_pstrdup(p, "/tmp/sipstoreXXXXXX");

    ck_assert_ptr_nonnull(mkdtemp(dir));
    sip_script_store_open(dir);
    return dir;
}

START_TEST(test_script_check)
{
    apr_pool_t *p;
    apr_array_header_t *stored;
    sip_script_t cgi = {"sip:a@x", "sip-cgi", "application/x-perl", "12345", 5,
                        apr_time_from_sec(1000)};
    sip_script_t *cp = &cgi;

    apr_pool_create(&p, NULL);
    stored = apr_array_make(p, 1, sizeof(sip_script_t *));
    *(sip_script_t **)apr_array_push(stored) = cp;
    /* §3.3: the stored script is newer than the date -> 412; equal or
     * later -> goes on; a type not stored counts as unmodified (G6) */
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("sip-cgi", "x")),
                                      apr_time_from_sec(999), 0), 412);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("sip-cgi", "x")),
                                      apr_time_from_sec(1000), 0), 0);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("script", "x")),
                                      apr_time_from_sec(1), 0), 0);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("sip-cgi", NULL)),
                                      apr_time_from_sec(999), 0), 412);
    /* G5: one date for every part: any newer one refuses the lot */
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 2, store_op("script", "x"),
                                                     store_op("sip-cgi", "y")),
                                      apr_time_from_sec(999), 0), 412);
    /* the total counts the replaced script once, a removed one not at all */
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("script", "123456")),
                                      0, 10), 413);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("script", "12345")),
                                      0, 10), 0);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("sip-cgi", "1234567890")),
                                      0, 10), 0);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 2, store_op("sip-cgi", NULL),
                                                     store_op("script", "1234567890")),
                                      0, 10), 0);
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("script", "123456")),
                                      0, 0), 0);
    /* out of date and too large: 413, as §3.3 keeps 412 for requests that
     * would otherwise succeed */
    ck_assert_int_eq(sip_script_check(stored, ops_of(p, 1, store_op("sip-cgi", "12345678901")),
                                      apr_time_from_sec(999), 10), 413);
    /* a second change within the same second still gets a later date */
    ck_assert(sip_script_next_mtime(stored, ops_of(p, 1, store_op("sip-cgi", "x")),
                                    apr_time_from_sec(1000) + 5) == apr_time_from_sec(1001));
    ck_assert(sip_script_next_mtime(stored, ops_of(p, 1, store_op("script", "x")),
                                    apr_time_from_sec(1000) + 5) == apr_time_from_sec(1000));
    ck_assert(sip_script_next_mtime(stored, ops_of(p, 1, store_op("sip-cgi", "x")),
                                    apr_time_from_sec(2000) + 7) == apr_time_from_sec(2000));
    apr_pool_destroy(p);
}
END_TEST

START_TEST(test_script_store_files)
{
    apr_pool_t *p;
    apr_array_header_t *list;
    sip_script_t *s;
    char *dir;
    static const char bin[] = "#!/bin/sh\n\0\xff binary";

    apr_pool_create(&p, NULL);
    dir = store_tmpdir(p);
    ck_assert_int_eq(sip_script_store_list(p, "sip:alice@x", &list), APR_SUCCESS);
    ck_assert_int_eq(list->nelts, 0);
    {
        sip_script_op_t op = store_op("sip-cgi", NULL);
        op.remove = 0;
        op.content_type = "application/x-sh";
        op.body = bin;
        op.len = sizeof(bin) - 1;
        ck_assert_int_eq(sip_script_store_apply(p, "sip:alice@x", ops_of(p, 1, op),
                                                apr_time_from_sec(1234) + 999999), 0);
    }
    ck_assert_int_eq(sip_script_store_get(p, "sip:alice@x", "sip-cgi", &s), APR_SUCCESS);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->len, sizeof(bin) - 1);
    ck_assert_int_eq(memcmp(s->body, bin, s->len), 0);
    ck_assert_str_eq(s->content_type, "application/x-sh");
    ck_assert(s->mtime == apr_time_from_sec(1234));    /* whole seconds */
    /* an empty script is a script (RP-9); another type is separate */
    ck_assert_int_eq(sip_script_store_apply(p, "sip:alice@x", ops_of(p, 1, store_op("script", "")),
                                            apr_time_from_sec(2000)), 0);
    ck_assert_int_eq(sip_script_store_list(p, "sip:alice@x", &list), APR_SUCCESS);
    ck_assert_int_eq(list->nelts, 2);
    ck_assert_int_eq(sip_script_store_get(p, "sip:alice@x", "script", &s), APR_SUCCESS);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->len, 0);
    /* other users see none of it */
    ck_assert_int_eq(sip_script_store_list(p, "sip:bob@x", &list), APR_SUCCESS);
    ck_assert_int_eq(list->nelts, 0);
    /* remove, and remove again (RP-11: nothing there is fine) */
    ck_assert_int_eq(sip_script_store_apply(p, "sip:alice@x", ops_of(p, 1, store_op("sip-cgi", NULL)),
                                            apr_time_now()), 0);
    ck_assert_int_eq(sip_script_store_apply(p, "sip:alice@x", ops_of(p, 1, store_op("sip-cgi", NULL)),
                                            apr_time_now()), 0);
    ck_assert_int_eq(sip_script_store_get(p, "sip:alice@x", "sip-cgi", &s), APR_SUCCESS);
    ck_assert_ptr_null(s);
    /* a type we do not store never becomes a file name */
    ck_assert_int_eq(sip_script_store_apply(p, "sip:alice@x",
                                            ops_of(p, 1, store_op("../../etc", "x")),
                                            apr_time_now()), 500);
    {
        /* a damaged file is an error, not a script */
        char *cmd = apr_psprintf(p, "for f in %s/*/script; do printf 'SIPSCRIPT 1\\naor: x' > "
                                 "$f; done", dir);
        ck_assert_int_eq(system(cmd), 0);
        ck_assert_int_ne(sip_script_store_get(p, "sip:alice@x", "script", &s), APR_SUCCESS);
        ck_assert_int_eq(system(apr_psprintf(p, "rm -rf %s", dir)), 0);
    }
    sip_script_store_open(NULL);
    apr_pool_destroy(p);
}
END_TEST

static Suite *script_store_suite(void)
{
    Suite *s = suite_create("script_store");
    TCase *tc = tcase_create("store");

    tcase_add_test(tc, test_script_check);
    tcase_add_test(tc, test_script_store_files);
    suite_add_tcase(s, tc);
    return s;
}

/* ---------------------------------------------------------------------- */
/* sip_mime: Content-Disposition, lists, dates, multipart/mixed         */

START_TEST(mime_disposition)
{
    sip_disposition_t d;

    /* RP-1: any order and case, generic parameters kept */
    ck_assert_int_eq(sip_mime_disposition_parse(pool, "sip-cgi; action=store", &d), 0);
    ck_assert_str_eq(d.type, "sip-cgi");
    ck_assert_str_eq(d.action, "store");
    ck_assert_ptr_null(d.handling);
    ck_assert_int_eq(sip_mime_disposition_parse(pool, "Script ;Foo=bar; ACTION = Remove;handling=OPTIONAL;x",
                                                &d), 0);
    ck_assert_str_eq(d.type, "script");
    ck_assert_str_eq(d.action, "remove");
    ck_assert_str_eq(d.handling, "optional");
    ck_assert_str_eq(apr_table_get(d.params, "foo"), "bar");
    ck_assert_str_eq(apr_table_get(d.params, "x"), "");
    /* RP-2: a quoted SIP-date kept as a time value */
    ck_assert_int_eq(sip_mime_disposition_parse(pool, "script;modification-date=\"Wed, 25 Oct 2000 "
                                                "21:21:54 GMT\";action=store", &d), 0);
    ck_assert(d.has_mdate);
    ck_assert(d.mdate == apr_time_from_sec(972508914));
    /* a bad date: the parameter is there, the time is not (S2) */
    ck_assert_int_eq(sip_mime_disposition_parse(pool, "script;modification-date=\"soon\"", &d), 0);
    ck_assert(d.has_mdate);
    ck_assert(d.mdate == 0);
    /* quoted values with ; and escapes */
    ck_assert_int_eq(sip_mime_disposition_parse(pool, "render;a=\"x;y\\\"z\"", &d), 0);
    ck_assert_str_eq(apr_table_get(d.params, "a"), "x;y\"z");
    /* malformed */
    {
        static const char *const bad[] = {"", ";", "sip-cgi;;action=store", "\"sip-cgi\"",
                                          "sip cgi;action=store", "sip-cgi;action=store;Action=remove",
                                          "sip-cgi;action=\"store", "sip-cgi;a b=c", "sip-cgi;=x",
                                          "sip-cgi;action=st ore", NULL};
        int i;
        for (i = 0; bad[i]; i++)
            ck_assert_msg(sip_mime_disposition_parse(pool, bad[i], &d) != 0, "accepted '%s'", bad[i]);
    }
}
END_TEST

START_TEST(mime_content_type)
{
    const char *type, *b;

    ck_assert_int_eq(sip_mime_content_type(pool, "Multipart/Mixed; boundary=\"a b:c\"", &type, &b), 0);
    ck_assert_str_eq(type, "multipart/mixed");
    ck_assert_str_eq(b, "a b:c");
    ck_assert_int_eq(sip_mime_content_type(pool, "application/cpl+xml;charset=utf-8", &type, &b), 0);
    ck_assert_str_eq(type, "application/cpl+xml");
    ck_assert_ptr_null(b);
    ck_assert_int_ne(sip_mime_content_type(pool, "cpl", &type, &b), 0);
    ck_assert_int_ne(sip_mime_content_type(pool, "a/b c", &type, &b), 0);
}
END_TEST

static apr_array_header_t *hdr_list(const char *const *nv)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(sip_header_t));
    for (; nv[0]; nv += 2) {
        sip_header_t *h = apr_array_push(a);
        h->name = nv[0];
        h->value = nv[1];
    }
    return a;
}

START_TEST(mime_lists)
{
    sip_mime_list_t l;
    static const char *const none[] = {"To", "x", NULL};
    static const char *const acc[] = {"Accept", "application/cpl+xml;q=0.5, text/*",
                                      "accept", "*/*;q=0, application/x-perl ; level=1", NULL};
    static const char *const empty[] = {"Accept", "", NULL};
    static const char *const ad[] = {"Accept-Disposition", "foo;x=1", "Accept-Disposition",
                                     "SIP-CGI ;q=0.1 , ", NULL};
    static const char *const star[] = {"Accept-Disposition", "*", NULL};
    static const char *const adempty[] = {"Accept-Disposition", "", NULL};
    static const char *const junk[] = {"Accept", "text, */html, application/sdp;q=2, text/plain", NULL};

    /* absent: everything; names nothing */
    ck_assert_int_eq(sip_mime_list_parse(pool, hdr_list(none), "Accept", 1, &l), 0);
    ck_assert(!l.present);
    ck_assert(sip_mime_accepts_type(&l, "application/cpl+xml"));
    ck_assert(!sip_mime_names_type(&l, "application/cpl+xml"));
    /* repeated headers and comma lists; most specific range decides, q=0 refuses */
    ck_assert_int_eq(sip_mime_list_parse(pool, hdr_list(acc), "Accept", 1, &l), 0);
    ck_assert(l.present);
    ck_assert_int_eq(l.ranges->nelts, 4);
    ck_assert(sip_mime_accepts_type(&l, "application/cpl+xml"));
    ck_assert(sip_mime_accepts_type(&l, "Application/CPL+XML; charset=utf-8"));
    ck_assert(sip_mime_accepts_type(&l, "text/plain"));
    ck_assert(sip_mime_accepts_type(&l, "application/x-perl"));
    ck_assert(!sip_mime_accepts_type(&l, "application/sdp"));    /* only */ /* q=0 */
    ck_assert(!sip_mime_accepts_type(&l, "multipart/mixed"));
    ck_assert(sip_mime_names_type(&l, "text/html"));
    /* empty: nothing */
    ck_assert_int_eq(sip_mime_list_parse(pool, hdr_list(empty), "Accept", 1, &l), 0);
    ck_assert(l.present);
    ck_assert(!sip_mime_accepts_type(&l, "application/cpl+xml"));
    /* malformed elements are left out, the rest counts */
    ck_assert_int_ne(sip_mime_list_parse(pool, hdr_list(junk), "Accept", 1, &l), 0);
    ck_assert_int_eq(l.ranges->nelts, 1);
    ck_assert(sip_mime_accepts_type(&l, "text/plain"));
    /* RP-3: Accept-Disposition over two headers, parameters ignored, case */
    ck_assert_int_eq(sip_mime_list_parse(pool, hdr_list(ad), "Accept-Disposition", 0, &l), 0);
    ck_assert(sip_mime_accepts_disposition(&l, "sip-cgi"));
    ck_assert(sip_mime_accepts_disposition(&l, "foo"));
    ck_assert(!sip_mime_accepts_disposition(&l, "script"));
    ck_assert_int_eq(sip_mime_list_parse(pool, hdr_list(star), "Accept-Disposition", 0, &l), 0);
    ck_assert(sip_mime_accepts_disposition(&l, "script"));
    /* RP-4: empty is legal and means none */
    ck_assert_int_eq(sip_mime_list_parse(pool, hdr_list(adempty), "Accept-Disposition", 0, &l), 0);
    ck_assert(l.present);
    ck_assert(!sip_mime_accepts_disposition(&l, "script"));
}
END_TEST

START_TEST(mime_dates)
{
    apr_time_t t = apr_time_from_sec(784111777);    /* Sun, 06 Nov 1994 08:49:37 GMT */

    ck_assert(sip_mime_date_parse("Sun, 06 Nov 1994 08:49:37 GMT") == t);
    ck_assert(sip_mime_date_parse(" \"Sun, 06 Nov 1994 08:49:37 GMT\" ") == t);
    ck_assert_str_eq(sip_mime_date_format(pool, t), "Sun, 06 Nov 1994 08:49:37 GMT");
    ck_assert(sip_mime_date_parse(sip_mime_date_format(pool, t)) == t);
    /* RP-5: not a date -> 0 (the header counts as absent) */
    ck_assert(sip_mime_date_parse("yesterday") == 0);
    ck_assert(sip_mime_date_parse("") == 0);
    ck_assert(sip_mime_date_parse(NULL) == 0);
    ck_assert(sip_mime_date_parse("Sun, 06 Nov 1994 08:49:37 GMT and a very long tail "
                                  "that does not fit any buffer of dates") == 0);
}
END_TEST

static const sip_mime_part_t *part_at(apr_array_header_t *parts, int i)
{
    return &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
}

START_TEST(mime_multipart)
{
    static const char body[] =
        "preamble\r\n--b1\r\nContent-Type: application/cpl+xml\r\ncontent-disposition: script;\r\n"
        " action=store\r\n\r\n<cpl/>\r\n--b1 \t\r\nc: text/plain\r\n\r\n\r\n--b1\r\n\r\nno headers\r\n"
        "--b1--\r\nepilogue";
    static const char lf[] = "--x\nContent-Disposition: sip-cgi;action=remove\n\n\n--x--\n";
    apr_array_header_t *parts, *again;
    const char *why = NULL, *b, *built;
    apr_size_t n;

    ck_assert_int_eq(sip_mime_multipart_split(pool, body, strlen(body), "b1", &parts, &why), 0);
    ck_assert_int_eq(parts->nelts, 3);
    ck_assert_str_eq(sip_mime_part_header(part_at(parts, 0), "Content-Disposition"),
                     "script; action=store");   /* folded */
    ck_assert_uint_eq(part_at(parts, 0)->len, 6);
    ck_assert(!memcmp(part_at(parts, 0)->body, "<cpl/>", 6));
    ck_assert_str_eq(sip_mime_part_header(part_at(parts, 1), "Content-Type"), "text/plain");
    ck_assert_uint_eq(part_at(parts, 1)->len, 0);                   /* an empty part */
    ck_assert_int_eq(part_at(parts, 2)->headers->nelts, 0);
    ck_assert_uint_eq(part_at(parts, 2)->len, 10);
    /* bare LF line ends */
    ck_assert_int_eq(sip_mime_multipart_split(pool, lf, strlen(lf), "x", &parts, &why), 0);
    ck_assert_int_eq(parts->nelts, 1);
    ck_assert_uint_eq(part_at(parts, 0)->len, 0);
    /* malformed: error and why */
    {
        static const char *const bad[][2] = {
            {"--b1\r\nx: y\r\n\r\nbody", "b1"},                 /* no close delimiter */
            {"text only", "b1"},                                /* no delimiter */
            {"--b1\r\nno colon here\r\n\r\nx\r\n--b1--", "b1"}, /* bad part header */
            {"--\r\n\r\n----", ""},                             /* empty boundary */
            {"--b1\r\n\r\nx\r\n--b1--", "b1\x01"},              /* not bchars */
            {"--b1x\r\n\r\nx\r\n--b1x--", "b1"},                /* a longer boundary is not it */
        };
        unsigned i;
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            why = NULL;
            ck_assert_msg(sip_mime_multipart_split(pool, bad[i][0], strlen(bad[i][0]), bad[i][1],
                                                   &parts, &why) != 0, "accepted #%u", i);
            ck_assert_ptr_nonnull(why);
        }
        ck_assert_int_ne(sip_mime_multipart_split(pool, "--b\r\n", 5, NULL, &parts, &why), 0);
    }
    /* build, then split again: same parts; the boundary occurs in none */
    ck_assert_int_eq(sip_mime_multipart_split(pool, body, strlen(body), "b1", &parts, &why), 0);
    built = sip_mime_multipart_build(pool, parts, &b, &n);
    ck_assert(strncmp(b, "mod_sip-", 8) == 0);
    ck_assert_int_eq(sip_mime_multipart_split(pool, built, n, b, &again, &why), 0);
    ck_assert_int_eq(again->nelts, 3);
    ck_assert_uint_eq(part_at(again, 0)->len, 6);
    ck_assert_uint_eq(part_at(again, 1)->len, 0);
    ck_assert_uint_eq(part_at(again, 2)->len, 10);
    ck_assert_str_eq(sip_mime_part_header(part_at(again, 0), "Content-Type"), "application/cpl+xml");
    ck_assert(!mime_occurs(part_at(parts, 2)->body, part_at(parts, 2)->len, b));
    ck_assert(mime_occurs("abcmod_sip-x", 12, "mod_sip-"));
}
END_TEST

/* ---- sip_register_payload: classification and the 2xx body ---- */

static sip_msg_t *register_with(const char *extra, const char *body)
{
    const char *text = apr_psprintf(pool,
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpl1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:carol@127.0.0.1>;tag=1\r\nTo: <sip:carol@127.0.0.1>\r\n"
        "Call-ID: pl1\r\nCSeq: 1 REGISTER\r\n%sContent-Length: %u\r\n\r\n%s", extra,
        (unsigned)strlen(body), body);
    return parse_ok(text);
}

static int classify_req(sip_regpl_t *pl, const char *extra, const char *body)
{
    const sip_msg_t *req = register_with(extra, body);
    memset(pl, 0, sizeof(*pl));
    pl->enabled = 1;
    pl->cgi_ok = 1;
    sip_mime_list_parse(pool, sip_msg_headers(req), "Accept", 1, &pl->accept);
    return rp_parse_body(pool, pl, req);
}

START_TEST(regpl_classify)
{
    sip_regpl_t pl;
    const sip_script_op_t *op;

    ck_assert_int_eq(classify_req(&pl, "", ""), 0);
    ck_assert_ptr_null(pl.ops);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/x-perl\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n", "#!/bin/sh\n"), 0);
    ck_assert_int_eq(pl.ops->nelts, 1);
    op = &APR_ARRAY_IDX(pl.ops, 0, sip_script_op_t);
    ck_assert_str_eq(op->type, "sip-cgi");
    ck_assert_str_eq(op->content_type, "application/x-perl");
    ck_assert_uint_eq(op->len, 10);
    ck_assert(!op->remove);
    /* an empty CPL store without a type gets application/cpl+xml */
    ck_assert_int_eq(classify_req(&pl, "Content-Disposition: script;action=store\r\n", ""), 0);
    ck_assert_str_eq(APR_ARRAY_IDX(pl.ops, 0, sip_script_op_t).content_type, "application/cpl+xml");
    /* multipart: each part's own disposition (RP-6) */
    ck_assert_int_eq(classify_req(&pl, "Content-Type: multipart/mixed;boundary=zz\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n",
                                  "--zz\r\nContent-Disposition: script;action=remove\r\n\r\n\r\n"
                                  "--zz\r\nContent-Disposition: sip-cgi;action=remove\r\n\r\n\r\n--zz--\r\n"), 0);
    ck_assert_int_eq(pl.ops->nelts, 2);
    ck_assert(APR_ARRAY_IDX(pl.ops, 0, sip_script_op_t).remove);
    ck_assert(APR_ARRAY_IDX(pl.ops, 1, sip_script_op_t).remove);
    /* the refusals and their codes (S1, S2; G7) */
    ck_assert_int_eq(classify_req(&pl, "Content-Type: text/plain\r\n", "x"), 415);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: text/plain\r\nContent-Disposition: sip-cgi\r\n", "x"), 400);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: text/plain\r\n"
                                  "Content-Disposition: sip-cgi;action=add\r\n", "x"), 400);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: text/plain\r\n"
                                  "Content-Disposition: sip-cgi;action=remove\r\n", "x"), 400);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: text/plain\r\n"
                                  "Content-Disposition: speed-dial;action=store\r\n", "x"), 415);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: text/plain\r\n"
                                  "Content-Disposition: speed-dial;handling=optional\r\n", "x"), 0);
    ck_assert_ptr_null(pl.ops);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: multipart/mixed;boundary=zz\r\n",
                                  "--zz\r\nContent-Disposition: script;action=remove\r\n\r\n"), 400);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: multipart/mixed;boundary=zz\r\n",
                                  "--zz\r\nContent-Disposition: script;action=remove\r\n\r\n\r\n"
                                  "--zz\r\nContent-Disposition: script;action=remove\r\n\r\n\r\n--zz--"), 400);
    ck_assert_str_eq(pl.reason, "Duplicate Script Type");
    /* explanation body only when Accept names text/plain (RP-15) */
    ck_assert_int_eq(classify_req(&pl, "Accept: text/plain\r\nContent-Type: text/plain\r\n", "x"), 415);
    ck_assert_ptr_nonnull(sip_regpl_explanation(pool, &pl));
    ck_assert_int_eq(classify_req(&pl, "Accept: application/sdp\r\nContent-Type: text/plain\r\n", "x"), 415);
    ck_assert_ptr_null(sip_regpl_explanation(pool, &pl));
}
END_TEST

START_TEST(regpl_checks)
{
    sip_regpl_t pl;
    const char *shell = "#!/bin/sh\necho\n";
    static const char *const interp[] = {"/bin/sh", NULL};
    apr_array_header_t *allowed = apr_array_make(pool, 1, sizeof(const char *));

    *(const char **)apr_array_push(allowed) = interp[0];
    test_upload_conf.interpreters = allowed;
    stub_conf.upload_max_size = 20;
    stub_conf.upload_max_total = 30;
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/x-sh\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n", shell), 0);
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 0);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/x-sh\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n",
                                  "#!/bin/sh\n# this is longer than twenty\n"), 0);
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 413);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/x-sh\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n", "#!/bin/ksh\n"), 0);
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 415);
    ck_assert_ptr_nonnull(strstr(pl.warning, "/bin/ksh"));
    pl.cgi_ok = 0;      /* no SipUploadUser */
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/x-sh\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n", shell), 0);
    pl.cgi_ok = 0;
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 415);
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/cpl+xml\r\n"
                                  "Content-Disposition: script;action=store\r\n", "<cpl"), 0);
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 400);
    ck_assert_str_eq(pl.reason, "Bad CPL Script");
    ck_assert_int_eq(classify_req(&pl, "Content-Type: application/x-python\r\n"
                                  "Content-Disposition: script;action=store\r\n", "print 1"), 0);
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 415);
    /* the total of one request over SipScriptUploadMaxTotal */
    ck_assert_int_eq(classify_req(&pl, "Content-Type: multipart/mixed;boundary=zz\r\n",
                                  "--zz\r\nContent-Type: application/x-sh\r\n"
                                  "Content-Disposition: sip-cgi;action=store\r\n\r\n#!/bin/sh\n#1234567\r\n"
                                  "--zz\r\nContent-Type: application/cpl+xml\r\n"
                                  "Content-Disposition: script;action=store\r\n\r\n<cpl xmlns='x'/>\r\n--zz--"), 0);
    ck_assert_int_eq(rp_check_scripts(pool, NULL, &pl), 413);
    stub_conf.upload_max_size = 0;
    stub_conf.upload_max_total = 0;
    test_upload_conf.interpreters = NULL;
}
END_TEST

static sip_script_t *script_of(const char *type, const char *ctype, const char *body)
{
    sip_script_t *sc = apr_pcalloc(pool, sizeof(*sc));
    sc->type = type;
    sc->content_type = ctype;
    sc->body = body;
    sc->len = strlen(body);
    sc->mtime = apr_time_from_sec(972508914);
    return sc;
}

static int body_for(const char *const *nv, const apr_array_header_t *scripts,
                    apr_array_header_t **hdrs, const char **ctype, const char **body,
                    apr_size_t *len)
{
    sip_regpl_t pl;
    memset(&pl, 0, sizeof(pl));
    pl.enabled = pl.download = 1;
    sip_mime_list_parse(pool, hdr_list(nv), "Accept", 1, &pl.accept);
    sip_mime_list_parse(pool, hdr_list(nv), "Accept-Disposition", 0, &pl.adisp);
    *hdrs = apr_array_make(pool, 4, sizeof(const char *));
    return sip_regpl_body(pool, &pl, scripts, *hdrs, ctype, body, len);
}

START_TEST(regpl_download)
{
    apr_array_header_t *sc = apr_array_make(pool, 2, sizeof(sip_script_t *)), *h, *parts;
    const char *ct, *body, *type, *b, *why;
    apr_size_t len;
    static const char *const both[] = {"Accept", "multipart/mixed, */*", "Accept-Disposition", "*", NULL};
    static const char *const single[] = {"Accept", "application/*", "Accept-Disposition", "script, sip-cgi",
                                         NULL};
    static const char *const cgi[] = {"Accept-Disposition", "sip-cgi", NULL};
    static const char *const g3[] = {"Accept", "application/sdp", NULL};
    static const char *const g3b[] = {"Accept", "application/cpl+xml", NULL};
    static const char *const optout[] = {"Accept", "*/*", "Accept-Disposition", "", NULL};

    *(sip_script_t **)apr_array_push(sc) = script_of("script", "application/cpl+xml", "<cpl/>");
    *(sip_script_t **)apr_array_push(sc) = script_of("sip-cgi", "application/x-perl", "#!perl");
    /* RP-25: multipart when Accept names it, every part typed and dated */
    ck_assert_int_eq(body_for(both, sc, &h, &ct, &body, &len), 2);
    ck_assert_int_eq(h->nelts, 0);
    ck_assert_int_eq(sip_mime_content_type(pool, ct, &type, &b), 0);
    ck_assert_str_eq(type, "multipart/mixed");
    ck_assert_int_eq(sip_mime_multipart_split(pool, body, len, b, &parts, &why), 0);
    ck_assert_int_eq(parts->nelts, 2);
    ck_assert_str_eq(sip_mime_part_header(part_at(parts, 1), "Content-Disposition"),
                     "sip-cgi;modification-date=\"Wed, 25 Oct 2000 21:21:54 GMT\"");
    ck_assert_str_eq(sip_mime_part_header(part_at(parts, 0), "Content-Type"), "application/cpl+xml");
    /* otherwise exactly one, as the body itself */
    ck_assert_int_eq(body_for(single, sc, &h, &ct, &body, &len), 1);
    ck_assert_str_eq(ct, "application/cpl+xml");
    ck_assert_str_eq(APR_ARRAY_IDX(h, 0, const char *), "Content-Disposition");
    ck_assert(!strncmp(APR_ARRAY_IDX(h, 1, const char *), "script;modification-date=", 25));
    /* Accept-Disposition without Accept (RP-24) */
    ck_assert_int_eq(body_for(cgi, sc, &h, &ct, &body, &len), 1);
    ck_assert_str_eq(body, "#!perl");
    /* G3: without Accept-Disposition only what Accept names */
    ck_assert_int_eq(body_for(g3, sc, &h, &ct, &body, &len), 0);
    ck_assert_int_eq(body_for(g3b, sc, &h, &ct, &body, &len), 1);
    /* RP-4 */
    ck_assert_int_eq(body_for(optout, sc, &h, &ct, &body, &len), 0);
    /* RP-9: an empty script is typed and dated, with no body */
    APR_ARRAY_IDX(sc, 1, sip_script_t *)->len = 0;
    ck_assert_int_eq(body_for(cgi, sc, &h, &ct, &body, &len), 1);
    ck_assert_ptr_null(body);
    ck_assert_int_eq(h->nelts, 4);
    ck_assert_str_eq(APR_ARRAY_IDX(h, 2, const char *), "Content-Type");
    ck_assert_str_eq(APR_ARRAY_IDX(h, 3, const char *), "application/x-perl");
}
END_TEST

START_TEST(regpl_headers)
{
    sip_regpl_t pl;
    const char *const *h;
    static const char *const base[] = {"Date", "x", NULL};

    memset(&pl, 0, sizeof(pl));
    ck_assert_ptr_eq(sip_regpl_headers(pool, &pl, 200, base), base);    /* off: nothing added */
    pl.enabled = pl.cgi_ok = 1;
    pl.warning = "say \"no\"";
    h = sip_regpl_headers(pool, &pl, 200, base);
    ck_assert_str_eq(h[2], "Accept");
    ck_assert_str_eq(h[5], "script, sip-cgi");
    ck_assert_ptr_null(h[6]);       /* no Warning on a 2xx */
    h = sip_regpl_headers(pool, &pl, 400, NULL);
    ck_assert_str_eq(h[4], "Warning");
    ck_assert_str_eq(h[5], "399 mod_sip \"say 'no'\"");
    pl.cgi_ok = 0;
    h = sip_regpl_headers(pool, &pl, 200, NULL);
    ck_assert_str_eq(h[1], "application/cpl+xml, multipart/mixed");
    ck_assert_str_eq(h[3], "script");
}
END_TEST

static Suite *mime_suite(void)
{
    Suite *s = suite_create("sip_mime");
    TCase *tc = tcase_create("mime");
    TCase *tr = tcase_create("register_payload");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, mime_disposition);
    tcase_add_test(tc, mime_content_type);
    tcase_add_test(tc, mime_lists);
    tcase_add_test(tc, mime_dates);
    tcase_add_test(tc, mime_multipart);
    suite_add_tcase(s, tc);
    tcase_add_checked_fixture(tr, pool_setup, pool_teardown);
    tcase_add_test(tr, regpl_classify);
    tcase_add_test(tr, regpl_checks);
    tcase_add_test(tr, regpl_download);
    tcase_add_test(tr, regpl_headers);
    suite_add_tcase(s, tr);
    return s;
}

/* ---- the CPL interpreter (sip_cpl_run.c) with a fake host ---- */

/* The fake host writes every call into a trace ("proxy(sip:a@x/1000;t=20,r=1,o=0)
 * end(PROXY_RESPONSE)") and answers lookups and proxies as a test sets:
 * at once from inside the call, or later (the test calls *_done). */
typedef struct {
    char *trace;
    int ended;
    sip_cpl_end_t how;
    const char *node, *why;
    const apr_array_header_t *end_locs;
    int lookup_answer;              /* 0: later; else a sip_cpl_lookup_result_t */
    const char *lookup_found;       /* "sip:a@x/1000 sip:b@x/500" */
    int px[8];                      /* proxy answers in turn; -1: later */
    int npx;
    int px_status;
    const char *px_contacts;        /* for SIP_CPL_PX_REDIRECTION */
    sip_cpl_run_t *run;
    int abort_in_host;              /* lookup: abort, then answer */
} cpl_fake_t;

static cpl_fake_t fake;

static void fake_add(const char *s)
{
    fake.trace = fake.trace ? apr_pstrcat(pool, fake.trace, " ", s, NULL) : apr_pstrdup(pool, s);
}

static const char *fake_locs(const apr_array_header_t *locs)
{
    const char *s = "";
    int i;

    for (i = 0; locs && i < locs->nelts; i++) {
        const sip_cpl_location_t *l = &APR_ARRAY_IDX(locs, i, sip_cpl_location_t);
        s = apr_psprintf(pool, "%s%s%s/%d", s, i ? "," : "", l->uri, l->q1000);
    }
    return s;
}

/* "sip:a@x/1000 sip:b@x/500" as an array of sip_cpl_location_t (or of
 * plain URIs when 'plain') */
static apr_array_header_t *fake_list(const char *text, int plain)
{
    apr_array_header_t *a = apr_array_make(pool, 4, plain ? sizeof(const char *)
                                                          : sizeof(sip_cpl_location_t));
    char *copy = apr_pstrdup(pool, text ? text : ""), *item, *last;

    for (item = apr_strtok(copy, " ", &last); item; item = apr_strtok(NULL, " ", &last)) {
        char *slash = strrchr(item, '/');
        if (plain) {
            APR_ARRAY_PUSH(a, const char *) = item;
            continue;
        }
        {
            sip_cpl_location_t *l = apr_array_push(a);
            if (slash)
                *slash = '\0';
            l->uri = item;
            l->q1000 = slash ? atoi(slash + 1) : 1000;
        }
    }
    return a;
}

static void fake_lookup(void *baton, sip_cpl_run_t *run, const char *source, int timeout)
{
    fake_add(apr_psprintf(pool, "lookup(%s,%d)", source, timeout));
    fake.run = run;
    if (fake.abort_in_host)
        sip_cpl_run_abort(run);
    if (fake.lookup_answer)
        sip_cpl_lookup_done(run, fake.lookup_answer, fake_list(fake.lookup_found, 0));
}

static void fake_proxy(void *baton, sip_cpl_run_t *run, const sip_cpl_proxy_req_t *req)
{
    int answer = fake.px[fake.npx++];

    fake_add(apr_psprintf(pool, "proxy(%s;t=%d,r=%d,o=%d)", fake_locs(req->locations),
                          req->timeout_sec, req->recurse, (int)req->ordering));
    ck_assert_int_gt(req->locations->nelts, 0);
    fake.run = run;
    if (answer >= 0)
        sip_cpl_proxy_done(run, answer, fake.px_status, fake_list(fake.px_contacts, 1));
}

static void fake_redirect(void *baton, const apr_array_header_t *locations, int permanent)
{
    fake_add(apr_psprintf(pool, "redirect(%s;p=%d)", fake_locs(locations), permanent));
}

static void fake_reject(void *baton, int status, const char *reason)
{
    fake_add(apr_psprintf(pool, "reject(%d,%s)", status, reason ? reason : "-"));
}

static void fake_log(void *baton, const char *name, const char *comment)
{
    fake_add(apr_psprintf(pool, "log(%s,%s)", name ? name : "-", comment ? comment : "-"));
}

static void fake_mail(void *baton, const char *url)
{
    fake_add(apr_psprintf(pool, "mail(%s)", url));
}

static void fake_end(void *baton, sip_cpl_end_t how, const apr_array_header_t *locations,
                     const char *node, const char *why)
{
    static const char *const names[] = {"?", "ANSWERED", "PROXY_RESPONSE", "DEFAULT", "FAILED"};

    ck_assert_int_eq(fake.ended, 0);    /* once */
    fake.ended = 1;
    fake.how = how;
    fake.node = node;
    fake.why = why;
    fake.end_locs = locations;
    if (how == SIP_CPL_END_FAILED) {
        ck_assert_ptr_nonnull(node);
        ck_assert_ptr_nonnull(why);
        fake_add(apr_psprintf(pool, "end(FAILED,%s)", node));
    } else {
        ck_assert_ptr_nonnull(locations);
        /* the set matters only to the default handling */
        int show = how == SIP_CPL_END_DEFAULT && locations->nelts;
        fake_add(apr_psprintf(pool, "end(%s%s%s)", names[how], show ? "," : "",
                              show ? fake_locs(locations) : ""));
    }
}

static const sip_cpl_host_t fake_host = {
    fake_lookup, fake_proxy, fake_redirect, fake_reject, fake_log, fake_mail, fake_end
};

static void fake_reset(void)
{
    memset(&fake, 0, sizeof(fake));
    fake.lookup_answer = SIP_CPL_LOOKUP_SUCCESS;
    fake.lookup_found = "sip:bob@192.0.2.10/1000";
    memset(fake.px, 0, sizeof(fake.px));    /* every proxy succeeds */
}

/* An INVITE; 'extra' are whole header lines. */
static const sip_msg_t *cpl_req(const char *ruri, const char *from, const char *to,
                                const char *extra)
{
    const char *text = apr_psprintf(pool,
        "INVITE %s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcpl1\r\n"
        "Max-Forwards: 70\r\n"
        "From: %s;tag=f1\r\n"
        "To: %s\r\n"
        "Call-ID: cpl-run@192.0.2.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "%s"
        "Content-Length: 0\r\n\r\n",
        ruri, from, to, extra ? extra : "");
    sip_msg_t *m = NULL;
    sip_msg_error_t err;

    ck_assert_msg(sip_msg_parse(pool, text, strlen(text), &LIM, 1, &m, &err) == APR_SUCCESS,
                  "%d %s: %s", err.status, err.reason, text);
    return m;
}

/* The usual call: Alice at atlanta calls Bob. */
static const sip_msg_t *cpl_req_std(const char *extra)
{
    return cpl_req("sip:bob@biloxi.example.com", "\"Alice Smith\" <sip:alice@atlanta.example.com>",
                   "Bob <sip:bob@biloxi.example.com>", extra);
}

static const sip_cpl_script_t *cpl_script(const char *inner)
{
    const char *text = apr_pstrcat(pool, CPL_HEAD, inner, "</cpl>", NULL), *why = NULL;
    const sip_cpl_script_t *sc = sip_cpl_compile(pool, text, strlen(text), "test", &why);

    ck_assert_msg(sc != NULL, "refused: %s: %s", why ? why : "?", inner);
    return sc;
}

static const char *cpl_refusal(const char *inner)
{
    const char *text = apr_pstrcat(pool, CPL_HEAD, inner, "</cpl>", NULL), *why = NULL;

    ck_assert_msg(sip_cpl_compile(pool, text, strlen(text), "test", &why) == NULL,
                  "compiled: %s", inner);
    ck_assert_ptr_nonnull(why);
    /* upload validation is the same compile */
    ck_assert(!sip_cpl_validate(pool, text, strlen(text), &why));
    return why;
}

#define CPL_NOON ((apr_time_t)1765022400 * APR_USEC_PER_SEC)     /* 2025-12-06 12:00 UTC */

static const char *cpl_trace_dir(const char *inner, sip_cpl_dir_t dir, const sip_msg_t *req)
{
    const sip_cpl_script_t *sc = cpl_script(inner);

    fake.trace = NULL;
    fake.ended = 0;
    fake.npx = 0;
    fake.run = sip_cpl_run_start(pool, sc, dir, req, "sip:bob@biloxi.example.com", CPL_NOON,
                                 &fake_host, NULL);
    ck_assert_ptr_nonnull(fake.run);
    return fake.trace ? fake.trace : "";
}

static const char *cpl_trace(const char *inner, const sip_msg_t *req)
{
    return cpl_trace_dir(inner, SIP_CPL_INCOMING, req ? req : cpl_req_std(NULL));
}

#define CK_TRACE(inner, req, expect) \
    ck_assert_str_eq(cpl_trace((inner), (req)), (expect))

START_TEST(cplrun_location_proxy_redirect_reject)
{
    fake_reset();
    CK_TRACE("<incoming><location url=\"sip:bob@192.0.2.7\"><redirect/></location></incoming>",
             NULL, "redirect(sip:bob@192.0.2.7/1000;p=0) end(ANSWERED)");
    CK_TRACE("<incoming><location url=\"sip:bob@192.0.2.7\"><redirect permanent=\"yes\"/>"
             "</location></incoming>",
             NULL, "redirect(sip:bob@192.0.2.7/1000;p=1) end(ANSWERED)");
    /* priorities: best first, equal ones in the order added; clear */
    CK_TRACE("<incoming><location url=\"sip:a@x\" priority=\"0.5\"><location url=\"sip:b@x\">"
             "<location url=\"sip:c@x\" priority=\"0.5\"><location url=\"sip:d@x\" priority=\"0\">"
             "<proxy/></location></location></location></location></incoming>",
             NULL, "proxy(sip:b@x/1000,sip:a@x/500,sip:c@x/500,sip:d@x/0;t=20,r=1,o=0) "
             "end(ANSWERED)");
    CK_TRACE("<incoming><location url=\"sip:a@x\"><location url=\"sip:b@x\" clear=\"yes\">"
             "<proxy timeout=\"7\" recurse=\"no\" ordering=\"sequential\"/></location></location>"
             "</incoming>",
             NULL, "proxy(sip:b@x/1000;t=7,r=0,o=1) end(ANSWERED)");
    CK_TRACE("<incoming><location url=\"sip:a@x\"><proxy ordering=\"first-only\"/></location>"
             "</incoming>", NULL, "proxy(sip:a@x/1000;t=20,r=1,o=2) end(ANSWERED)");
    /* a set: the same URI (RFC 3261 comparison) once, with the better priority */
    CK_TRACE("<incoming><location url=\"sip:a@X.example\" priority=\"0.2\">"
             "<location url=\"sip:a@x.EXAMPLE\" priority=\"0.9\"><location url=\"sip:A@x.example\">"
             "<redirect/></location></location></location></incoming>",
             NULL, "redirect(sip:A@x.example/1000,sip:a@X.example/900;p=0) end(ANSWERED)");
    /* reject: names and numbers, reason */
    CK_TRACE("<incoming><reject status=\"busy\"/></incoming>", NULL,
             "reject(486,-) end(ANSWERED)");
    CK_TRACE("<incoming><reject status=\"notfound\"/></incoming>", NULL,
             "reject(404,-) end(ANSWERED)");
    CK_TRACE("<incoming><reject status=\"reject\" reason=\"Go away\"/></incoming>", NULL,
             "reject(603,Go away) end(ANSWERED)");
    CK_TRACE("<incoming><reject status=\"error\"/></incoming>", NULL,
             "reject(500,-) end(ANSWERED)");
    CK_TRACE("<incoming><reject status=\"480\" reason=\"Later\"/></incoming>", NULL,
             "reject(480,Later) end(ANSWERED)");
    CK_TRACE("<incoming><reject status=\"699\"/></incoming>", NULL,
             "reject(699,-) end(ANSWERED)");
    /* a signalling action ends the run: nothing after it */
    CK_TRACE("<incoming><location url=\"sip:a@x\"/></incoming>", NULL,
             "end(DEFAULT,sip:a@x/1000)");
    CK_TRACE("<incoming/>", NULL, "end(DEFAULT)");
}
END_TEST

START_TEST(cplrun_proxy_outputs)
{
    static const char px[] =
        "<incoming><location url=\"sip:bob@pc.example\"><proxy timeout=\"8\">"
        "<busy><log comment=\"busy\"><location url=\"sip:vm@x\"><proxy/></location></log></busy>"
        "<noanswer><reject status=\"480\"/></noanswer>"
        "<redirection><redirect/></redirection>"
        "<failure><reject status=\"error\" reason=\"failed\"/></failure>"
        "</proxy></location></incoming>";
    static const char with_default[] =
        "<incoming><location url=\"sip:bob@pc.example\"><proxy>"
        "<busy><reject status=\"busy\"/></busy>"
        "<default><log comment=\"default\"/></default>"
        "</proxy></location></incoming>";

    fake_reset();
    fake.px[0] = 0;
    CK_TRACE(px, NULL, "proxy(sip:bob@pc.example/1000;t=8,r=1,o=0) end(ANSWERED)");
    /* busy: the location set starts empty again (the tried location is gone) */
    fake.px[0] = SIP_CPL_PX_BUSY;
    fake.px[1] = 0;
    CK_TRACE(px, NULL, "proxy(sip:bob@pc.example/1000;t=8,r=1,o=0) log(-,busy) "
             "proxy(sip:vm@x/1000;t=20,r=1,o=0) end(ANSWERED)");
    fake.px[1] = SIP_CPL_PX_NOANSWER;       /* the second proxy has no outputs */
    CK_TRACE(px, NULL, "proxy(sip:bob@pc.example/1000;t=8,r=1,o=0) log(-,busy) "
             "proxy(sip:vm@x/1000;t=20,r=1,o=0) end(PROXY_RESPONSE)");
    fake.px[0] = SIP_CPL_PX_NOANSWER;
    CK_TRACE(px, NULL, "proxy(sip:bob@pc.example/1000;t=8,r=1,o=0) reject(480,-) end(ANSWERED)");
    /* redirection: the Contacts become the location set */
    fake.px[0] = SIP_CPL_PX_REDIRECTION;
    fake.px_contacts = "sip:bob@elsewhere.example sip:bob@other.example";
    CK_TRACE(px, NULL, "proxy(sip:bob@pc.example/1000;t=8,r=1,o=0) "
             "redirect(sip:bob@elsewhere.example/1000,sip:bob@other.example/1000;p=0) "
             "end(ANSWERED)");
    fake.px[0] = SIP_CPL_PX_FAILURE;
    CK_TRACE(px, NULL, "proxy(sip:bob@pc.example/1000;t=8,r=1,o=0) reject(500,failed) "
             "end(ANSWERED)");
    /* default catches what has no output of its own; an output that ends
     * without a signalling action returns the best response (§10) */
    fake.px[0] = SIP_CPL_PX_BUSY;
    CK_TRACE(with_default, NULL, "proxy(sip:bob@pc.example/1000;t=20,r=1,o=0) reject(486,-) "
             "end(ANSWERED)");
    fake.px[0] = SIP_CPL_PX_NOANSWER;
    CK_TRACE(with_default, NULL, "proxy(sip:bob@pc.example/1000;t=20,r=1,o=0) log(-,default) "
             "end(PROXY_RESPONSE)");
    fake.px[0] = SIP_CPL_PX_FAILURE;
    CK_TRACE(with_default, NULL, "proxy(sip:bob@pc.example/1000;t=20,r=1,o=0) log(-,default) "
             "end(PROXY_RESPONSE)");
    /* no outputs at all */
    fake.px[0] = SIP_CPL_PX_FAILURE;
    CK_TRACE("<incoming><location url=\"sip:a@x\"><proxy/></location></incoming>", NULL,
             "proxy(sip:a@x/1000;t=20,r=1,o=0) end(PROXY_RESPONSE)");
    /* an empty output is an output: it ends there (best response) */
    fake.px[0] = SIP_CPL_PX_BUSY;
    CK_TRACE("<incoming><location url=\"sip:a@x\"><proxy><busy/><default><reject status=\"500\"/>"
             "</default></proxy></location></incoming>", NULL,
             "proxy(sip:a@x/1000;t=20,r=1,o=0) end(PROXY_RESPONSE)");
    /* a proxy with nowhere to go fails at once: failure output, or the run fails */
    CK_TRACE("<incoming><proxy><failure><reject status=\"404\"/></failure></proxy></incoming>",
             NULL, "reject(404,-) end(ANSWERED)");
    CK_TRACE("<incoming><proxy><default><reject status=\"410\"/></default></proxy></incoming>",
             NULL, "reject(410,-) end(ANSWERED)");
    CK_TRACE("<incoming><proxy/></incoming>", NULL, "end(FAILED,proxy)");
    ck_assert_ptr_nonnull(strstr(fake.why, "empty location set"));
    CK_TRACE("<incoming><redirect/></incoming>", NULL, "end(FAILED,redirect)");
}
END_TEST

START_TEST(cplrun_address_switch)
{
    const sip_msg_t *std;
    static const char sw_user[] =
        "<incoming><address-switch field=\"origin\" subfield=\"user\">"
        "<address is=\"anonymous\"><reject status=\"603\"/></address>"
        "<address is=\"alice\"><log name=\"alice\"/></address>"
        "<otherwise><log name=\"other\"/></otherwise>"
        "</address-switch></incoming>";

    fake_reset();
    std = cpl_req_std(NULL);
    CK_TRACE(sw_user, std, "log(alice,-) end(DEFAULT)");
    CK_TRACE(sw_user, cpl_req("sip:bob@biloxi.example.com", "<sip:anonymous@anonymous.invalid>",
                              "<sip:bob@biloxi.example.com>", NULL),
             "reject(603,-) end(ANSWERED)");
    /* user is case-sensitive */
    CK_TRACE(sw_user, cpl_req("sip:bob@b", "<sip:Alice@a>", "<sip:bob@b>", NULL),
             "log(other,-) end(DEFAULT)");
    /* whole address: RFC 3261 comparison (host case, default port is not no port) */
    CK_TRACE("<incoming><address-switch field=\"origin\">"
             "<address is=\"sip:alice@ATLANTA.example.com\"><log name=\"hit\"/></address>"
             "</address-switch></incoming>", std, "log(hit,-) end(DEFAULT)");
    CK_TRACE("<incoming><address-switch field=\"origin\">"
             "<address is=\"sip:alice@atlanta.example.com:5060\"><log name=\"hit\"/></address>"
             "</address-switch></incoming>", std, "end(DEFAULT)");
    /* destination is the Request-URI, original-destination the To */
    CK_TRACE("<incoming><address-switch field=\"destination\" subfield=\"host\">"
             "<address is=\"BILOXI.example.com\"><log name=\"d\"/></address>"
             "</address-switch></incoming>", std, "log(d,-) end(DEFAULT)");
    CK_TRACE("<incoming><address-switch field=\"original-destination\" subfield=\"user\">"
             "<address is=\"carol\"><log name=\"to-carol\"/></address>"
             "<address is=\"bob\"><log name=\"to-bob\"/></address>"
             "</address-switch></incoming>",
             cpl_req("sip:carol@192.0.2.9", "<sip:a@x>", "<sip:bob@b>", NULL),
             "log(to-bob,-) end(DEFAULT)");
    /* host subdomain-of: whole labels, no case; an IP matches only itself */
    {
        static const char sw[] =
            "<incoming><address-switch field=\"origin\" subfield=\"host\">"
            "<address subdomain-of=\"example.com\"><log name=\"ours\"/></address>"
            "<address subdomain-of=\"192.0.2.1\"><log name=\"ip\"/></address>"
            "<otherwise><log name=\"foreign\"/></otherwise>"
            "</address-switch></incoming>";
        CK_TRACE(sw, std, "log(ours,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sip:a@EXAMPLE.COM>", "<sip:b@b>", NULL),
                 "log(ours,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sip:a@badexample.com>", "<sip:b@b>", NULL),
                 "log(foreign,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sip:a@192.0.2.1>", "<sip:b@b>", NULL),
                 "log(ip,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sip:a@10.192.0.2.1>", "<sip:b@b>", NULL),
                 "log(foreign,-) end(DEFAULT)");
    }
    /* port: absent is the default port */
    {
        static const char sw[] =
            "<incoming><address-switch field=\"origin\" subfield=\"port\">"
            "<address is=\"5060\"><log name=\"5060\"/></address>"
            "<address is=\"5061\"><log name=\"5061\"/></address>"
            "<otherwise><log name=\"other\"/></otherwise>"
            "</address-switch></incoming>";
        CK_TRACE(sw, std, "log(5060,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sips:a@x>", "<sip:b@b>", NULL),
                 "log(5061,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sip:a@x:5070>", "<sip:b@b>", NULL),
                 "log(other,-) end(DEFAULT)");
    }
    /* address-type, password, display (is, contains: no case) */
    CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"address-type\">"
             "<address is=\"SIP\"><log name=\"sip\"/></address></address-switch></incoming>",
             std, "log(sip,-) end(DEFAULT)");
    {
        static const char sw[] =
            "<incoming><address-switch field=\"origin\" subfield=\"display\">"
            "<address contains=\"smith\"><log name=\"a smith\"/></address>"
            "<address is=\"Carol\"><log name=\"carol\"/></address>"
            "<not-present><log name=\"no name\"/></not-present>"
            "<otherwise><log name=\"other\"/></otherwise>"
            "</address-switch></incoming>";
        CK_TRACE(sw, std, "log(a smith,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "carol <sip:c@x>", "<sip:b@b>", NULL),
                 "log(carol,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "\"Dave \\\"D\\\" Jones\" <sip:d@x>", "<sip:b@b>", NULL),
                 "log(other,-) end(DEFAULT)");
        CK_TRACE(sw, cpl_req("sip:b@b", "<sip:c@x>", "<sip:b@b>", NULL),
                 "log(no name,-) end(DEFAULT)");
        /* quoted-pairs resolved before comparing */
        CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"display\">"
                 "<address is='dave \"d\" JONES'><log name=\"dave\"/></address>"
                 "</address-switch></incoming>",
                 cpl_req("sip:b@b", "\"Dave \\\"D\\\" Jones\" <sip:d@x>", "<sip:b@b>", NULL),
                 "log(dave,-) end(DEFAULT)");
        /* the Request-URI has no display name */
        CK_TRACE("<incoming><address-switch field=\"destination\" subfield=\"display\">"
                 "<address is=\"x\"/><not-present><log name=\"np\"/></not-present>"
                 "</address-switch></incoming>", std, "log(np,-) end(DEFAULT)");
    }
    CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"password\">"
             "<address is=\"secret\"><log name=\"pw\"/></address>"
             "<not-present><log name=\"no pw\"/></not-present></address-switch></incoming>",
             cpl_req("sip:b@b", "<sip:a:secret@x>", "<sip:b@b>", NULL), "log(pw,-) end(DEFAULT)");
    CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"password\">"
             "<address is=\"secret\"><log name=\"pw\"/></address>"
             "<not-present><log name=\"no pw\"/></not-present></address-switch></incoming>",
             std, "log(no pw,-) end(DEFAULT)");
    CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"alias-type\">"
             "<address is=\"x\"/><not-present><log name=\"h323 only\"/></not-present>"
             "</address-switch></incoming>", std, "log(h323 only,-) end(DEFAULT)");
    /* tel: tel URIs and user=phone; separators do not count; prefix */
    {
        static const char sw[] =
            "<outgoing><address-switch field=\"original-destination\" subfield=\"tel\">"
            "<address subdomain-of=\"1900\"><reject status=\"reject\" reason=\"No 1-900\"/>"
            "</address>"
            "<address is=\"+1 (212) 555-1234\"><log name=\"office\"/></address>"
            "<not-present><log name=\"not a number\"/></not-present>"
            "</address-switch></outgoing>";
        const sip_msg_t *m = cpl_req("sip:1-900-555-1234@gw.example;user=phone", "<sip:a@x>",
                                     "<sip:1-900-555-1234@gw.example;user=phone>", NULL);
        ck_assert_str_eq(cpl_trace_dir(sw, SIP_CPL_OUTGOING, m),
                         "reject(603,No 1-900) end(ANSWERED)");
        /* (the message layer takes no tel: Request-URI: 416) */
        m = cpl_req("sip:office@gw.example", "<sip:a@x>", "<tel:+1-212-555-1234>", NULL);
        ck_assert_str_eq(cpl_trace_dir(sw, SIP_CPL_OUTGOING, m),
                         "log(office,-) end(DEFAULT,sip:office@gw.example/1000)");
        m = cpl_req("sip:b@b", "<sip:a@x>", "<sip:19005551234@gw.example>", NULL);
        ck_assert_str_eq(cpl_trace_dir(sw, SIP_CPL_OUTGOING, m),
                         "log(not a number,-) end(DEFAULT,sip:b@b/1000)");
    }
    /* no output applies: the switch ends the script */
    CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"user\">"
             "<address is=\"nobody\"><reject status=\"busy\"/></address></address-switch>"
             "</incoming>", std, "end(DEFAULT)");
    /* a missing field without not-present takes otherwise */
    CK_TRACE("<incoming><address-switch field=\"origin\" subfield=\"display\">"
             "<address is=\"x\"/><otherwise><log name=\"otherwise\"/></otherwise>"
             "</address-switch></incoming>",
             cpl_req("sip:b@b", "<sip:c@x>", "<sip:b@b>", NULL), "log(otherwise,-) end(DEFAULT)");
}
END_TEST

START_TEST(cplrun_string_language_priority)
{
    static const char str_sw[] =
        "<incoming><string-switch field=\"subject\">"
        "<string is=\"urgent\"><log name=\"is\"/></string>"
        "<string contains=\"Lunch\"><log name=\"contains\"/></string>"
        "<not-present><log name=\"np\"/></not-present>"
        "<otherwise><log name=\"other\"/></otherwise>"
        "</string-switch></incoming>";
    static const char lang_sw[] =
        "<incoming><language-switch>"
        "<language matches=\"es\"><log name=\"es\"/></language>"
        "<language matches=\"en-GB\"><log name=\"en-GB\"/></language>"
        "<not-present><log name=\"np\"/></not-present>"
        "<otherwise><log name=\"other\"/></otherwise>"
        "</language-switch></incoming>";
    static const char prio_sw[] =
        "<incoming><priority-switch>"
        "<priority greater=\"urgent\"><log name=\"emergency\"/></priority>"
        "<priority equal=\"URGENT\"><log name=\"urgent\"/></priority>"
        "<priority less=\"normal\"><log name=\"non-urgent\"/></priority>"
        "<priority equal=\"x-custom\"><log name=\"custom\"/></priority>"
        "<otherwise><log name=\"normal\"/></otherwise>"
        "</priority-switch></incoming>";

    fake_reset();
    /* string-switch (§4.2): is and contains without case, trimmed */
    CK_TRACE(str_sw, cpl_req_std("Subject:  URGENT \r\n"), "log(is,-) end(DEFAULT)");
    CK_TRACE(str_sw, cpl_req_std("s: lunch today?\r\n"), "log(contains,-) end(DEFAULT)");
    CK_TRACE(str_sw, cpl_req_std("Subject: hello\r\n"), "log(other,-) end(DEFAULT)");
    CK_TRACE(str_sw, cpl_req_std(NULL), "log(np,-) end(DEFAULT)");
    CK_TRACE("<incoming><string-switch field=\"organization\"><string is=\"Example Inc.\">"
             "<log name=\"org\"/></string></string-switch></incoming>",
             cpl_req_std("Organization: example inc.\r\n"), "log(org,-) end(DEFAULT)");
    CK_TRACE("<incoming><string-switch field=\"user-agent\"><string contains=\"softphone\">"
             "<reject status=\"403\"/></string></string-switch></incoming>",
             cpl_req_std("User-Agent: Acme SoftPhone/1.0\r\n"), "reject(403,-) end(ANSWERED)");
    /* display: SIP has no such field (§4.2): not present */
    CK_TRACE("<incoming><string-switch field=\"display\"><string contains=\"\"/>"
             "<not-present><log name=\"np\"/></not-present></string-switch></incoming>",
             NULL, "log(np,-) end(DEFAULT)");
    /* language-switch (§4.3): Accept-Language ranges against the tag */
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: da, es;q=0.8\r\n"), "log(es,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: ES-mx\r\n"), "log(other,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: en\r\n"), "log(en-GB,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: en-US\r\n"), "log(other,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: es;q=0, *\r\n"), "log(other,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: fr\r\nAccept-Language: en-gb\r\n"),
             "log(en-GB,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std(NULL), "log(np,-) end(DEFAULT)");
    CK_TRACE(lang_sw, cpl_req_std("Accept-Language: \r\n"), "log(other,-) end(DEFAULT)");
    /* priority-switch (§4.5) */
    CK_TRACE(prio_sw, cpl_req_std("Priority: emergency\r\n"), "log(emergency,-) end(DEFAULT)");
    CK_TRACE(prio_sw, cpl_req_std("Priority: Urgent\r\n"), "log(urgent,-) end(DEFAULT)");
    CK_TRACE(prio_sw, cpl_req_std("Priority: non-urgent\r\n"), "log(non-urgent,-) end(DEFAULT)");
    CK_TRACE(prio_sw, cpl_req_std("Priority: normal\r\n"), "log(normal,-) end(DEFAULT)");
    CK_TRACE(prio_sw, cpl_req_std(NULL), "log(normal,-) end(DEFAULT)");      /* absent */
    /* an unknown value is normal for less/greater, itself for equal */
    CK_TRACE(prio_sw, cpl_req_std("Priority: X-Custom\r\n"), "log(custom,-) end(DEFAULT)");
    CK_TRACE(prio_sw, cpl_req_std("Priority: x-other\r\n"), "log(normal,-) end(DEFAULT)");
    CK_TRACE("<incoming><priority-switch><priority equal=\"normal\"><log name=\"n\"/></priority>"
             "<not-present><log name=\"np\"/></not-present></priority-switch></incoming>",
             NULL, "log(n,-) end(DEFAULT)");
    CK_TRACE("<incoming><priority-switch><priority less=\"non-urgent\"><log name=\"never\"/>"
             "</priority><priority greater=\"emergency\"><log name=\"never\"/></priority>"
             "</priority-switch></incoming>", cpl_req_std("Priority: emergency\r\n"),
             "end(DEFAULT)");
    CK_TRACE("<incoming><priority-switch><priority greater=\"non-urgent\"><log name=\"up\"/>"
             "</priority></priority-switch></incoming>", cpl_req_std("Priority: x\r\n"),
             "log(up,-) end(DEFAULT)");
}
END_TEST

START_TEST(cplrun_lookup_remove_location)
{
    static const char lk[] =
        "<incoming><location url=\"sip:old@x\"><lookup source=\"registration\" timeout=\"5\">"
        "<success><proxy/></success>"
        "<notfound><reject status=\"404\"/></notfound>"
        "<failure><reject status=\"500\"/></failure>"
        "</lookup></location></incoming>";

    fake_reset();
    fake.lookup_found = "sip:bob@192.0.2.10/500 sip:bob@192.0.2.11/1000";
    /* found locations join the set: best first, then in the order added */
    CK_TRACE(lk, NULL, "lookup(registration,5) "
             "proxy(sip:old@x/1000,sip:bob@192.0.2.11/1000,sip:bob@192.0.2.10/500;t=20,r=1,o=0) "
             "end(ANSWERED)");
    /* clear="yes": only what was found */
    CK_TRACE("<incoming><location url=\"sip:old@x\"><lookup source=\"registration\" clear=\"yes\">"
             "<success><proxy/></success></lookup></location></incoming>", NULL,
             "lookup(registration,30) proxy(sip:bob@192.0.2.11/1000,sip:bob@192.0.2.10/500;"
             "t=20,r=1,o=0) end(ANSWERED)");
    fake.lookup_answer = SIP_CPL_LOOKUP_NOTFOUND;
    CK_TRACE(lk, NULL, "lookup(registration,5) reject(404,-) end(ANSWERED)");
    /* success with nothing found is notfound */
    fake.lookup_answer = SIP_CPL_LOOKUP_SUCCESS;
    fake.lookup_found = "";
    CK_TRACE(lk, NULL, "lookup(registration,5) reject(404,-) end(ANSWERED)");
    fake.lookup_answer = SIP_CPL_LOOKUP_FAILURE;
    CK_TRACE(lk, NULL, "lookup(registration,5) reject(500,-) end(ANSWERED)");
    /* an output not written: the script ends there (default handling, set kept) */
    CK_TRACE("<incoming><location url=\"sip:a@x\"><lookup source=\"http://ls.example/\">"
             "<success><proxy/></success></lookup></location></incoming>", NULL,
             "lookup(http://ls.example/,30) end(DEFAULT,sip:a@x/1000)");
    fake.lookup_answer = SIP_CPL_LOOKUP_SUCCESS;
    fake.lookup_found = "sip:bob@192.0.2.10/1000";
    CK_TRACE("<incoming><lookup source=\"registration\"/></incoming>", NULL,
             "lookup(registration,30) end(DEFAULT,sip:bob@192.0.2.10/1000)");

    /* remove-location (§5.3): RFC 3261 URI comparison; without location, all */
    CK_TRACE("<incoming><location url=\"sip:a@X.example;transport=udp\"><location url=\"sip:b@x\">"
             "<location url=\"sip:a@x.example\">"
             "<remove-location location=\"sip:a@x.EXAMPLE;TRANSPORT=UDP\"><redirect/>"
             "</remove-location></location></location></location></incoming>", NULL,
             "redirect(sip:b@x/1000,sip:a@x.example/1000;p=0) end(ANSWERED)");
    CK_TRACE("<incoming><location url=\"sip:a@x\"><remove-location location=\"sip:A@x\">"
             "<redirect/></remove-location></location></incoming>", NULL,
             "redirect(sip:a@x/1000;p=0) end(ANSWERED)");
    CK_TRACE("<incoming><location url=\"sip:a@x\"><location url=\"tel:+1-555\">"
             "<remove-location><log name=\"empty\"/></remove-location></location></location>"
             "</incoming>", NULL, "log(empty,-) end(DEFAULT)");
    CK_TRACE("<incoming><location url=\"tel:+1555\"><location url=\"sip:a@x\">"
             "<remove-location location=\"TEL:+1555\"><redirect/></remove-location>"
             "</location></location></incoming>", NULL,
             "redirect(sip:a@x/1000;p=0) end(ANSWERED)");
}
END_TEST

START_TEST(cplrun_sub_log_mail)
{
    static const char script[] =
        "<subaction id=\"vm\"><log name=\"vm\" comment=\"to voicemail\">"
        "<location url=\"sip:bob@vm.example\"><proxy/></location></log></subaction>"
        "<subaction id=\"screen\"><mail url=\"mailto:bob@example.com?subject=screened\">"
        "<sub ref=\"vm\"/></mail></subaction>"
        "<subaction id=\"empty\"/>"
        "<incoming><address-switch field=\"origin\" subfield=\"host\">"
        "<address subdomain-of=\"spam.example\"><sub ref=\"screen\"/></address>"
        "<address is=\"quiet.example\"><sub ref=\"empty\"/></address>"
        "<otherwise><sub ref=\"vm\"/></otherwise></address-switch></incoming>"
        "<outgoing><log><mail url=\"mailto:log@example.com\"/></log></outgoing>";

    fake_reset();
    CK_TRACE(script, cpl_req("sip:bob@b", "<sip:x@a.spam.example>", "<sip:bob@b>", NULL),
             "mail(mailto:bob@example.com?subject=screened) log(vm,to voicemail) "
             "proxy(sip:bob@vm.example/1000;t=20,r=1,o=0) end(ANSWERED)");
    CK_TRACE(script, NULL, "log(vm,to voicemail) proxy(sip:bob@vm.example/1000;t=20,r=1,o=0) "
             "end(ANSWERED)");
    CK_TRACE(script, cpl_req("sip:bob@b", "<sip:x@quiet.example>", "<sip:bob@b>", NULL),
             "end(DEFAULT)");
    /* outgoing starts with the destination in the set; log and mail go on */
    ck_assert_str_eq(cpl_trace_dir(script, SIP_CPL_OUTGOING, cpl_req_std(NULL)),
                     "log(-,-) mail(mailto:log@example.com) "
                     "end(DEFAULT,sip:bob@biloxi.example.com/1000)");
    /* a script without the part asked for: default handling at once */
    ck_assert_str_eq(cpl_trace_dir("<incoming><reject status=\"busy\"/></incoming>",
                                   SIP_CPL_OUTGOING, cpl_req_std(NULL)),
                     "end(DEFAULT,sip:bob@biloxi.example.com/1000)");
    {
        const sip_cpl_script_t *sc = cpl_script(script);
        ck_assert(sip_cpl_script_has(sc, SIP_CPL_INCOMING));
        ck_assert(sip_cpl_script_has(sc, SIP_CPL_OUTGOING));
        sc = cpl_script("<incoming/>");
        ck_assert(sip_cpl_script_has(sc, SIP_CPL_INCOMING));
        ck_assert(!sip_cpl_script_has(sc, SIP_CPL_OUTGOING));
        ck_assert(!sip_cpl_script_has(NULL, SIP_CPL_INCOMING));
        ck_assert_str_eq(sip_cpl_run_script_name(fake.run), "test");
    }
    /* log text is one line whatever the script wrote */
    CK_TRACE("<incoming><log name=\"a&#10;b\" comment=\"c&#13;&#10;d\"/></incoming>", NULL,
             "log(a b,c  d) end(DEFAULT)");
}
END_TEST

START_TEST(cplrun_async)
{
    static const char script[] =
        "<incoming><lookup source=\"registration\"><success><proxy>"
        "<busy><location url=\"sip:vm@x\"><proxy/></location></busy>"
        "</proxy></success><failure><reject status=\"503\"/></failure></lookup></incoming>";
    sip_cpl_run_t *run;
    apr_array_header_t *found;

    fake_reset();
    fake.lookup_answer = 0;
    fake.px[0] = fake.px[1] = -1;
    /* each step waits for the host */
    CK_TRACE(script, NULL, "lookup(registration,30)");
    ck_assert_int_eq(fake.ended, 0);
    run = fake.run;
    /* answers to what it is not waiting for are ignored */
    sip_cpl_proxy_done(run, 0, 200, NULL);
    ck_assert_int_eq(fake.ended, 0);
    found = fake_list("sip:bob@192.0.2.20/1000", 0);
    sip_cpl_lookup_done(run, SIP_CPL_LOOKUP_SUCCESS, found);
    ck_assert_str_eq(fake.trace, "lookup(registration,30) "
                     "proxy(sip:bob@192.0.2.20/1000;t=20,r=1,o=0)");
    sip_cpl_lookup_done(run, SIP_CPL_LOOKUP_FAILURE, NULL);        /* late, twice: ignored */
    ck_assert_int_eq(fake.ended, 0);
    sip_cpl_proxy_done(run, SIP_CPL_PX_BUSY, 486, NULL);
    ck_assert_str_eq(fake.trace, "lookup(registration,30) "
                     "proxy(sip:bob@192.0.2.20/1000;t=20,r=1,o=0) "
                     "proxy(sip:vm@x/1000;t=20,r=1,o=0)");
    sip_cpl_proxy_done(run, 0, 200, NULL);
    ck_assert_int_eq(fake.ended, 1);
    ck_assert_int_eq(fake.how, SIP_CPL_END_ANSWERED);
    sip_cpl_proxy_done(run, 0, 200, NULL);        /* after the end: nothing */
    ck_assert_str_eq(fake.trace, "lookup(registration,30) "
                     "proxy(sip:bob@192.0.2.20/1000;t=20,r=1,o=0) "
                     "proxy(sip:vm@x/1000;t=20,r=1,o=0) end(ANSWERED)");

    /* abort while waiting: no callback ever after */
    CK_TRACE(script, NULL, "lookup(registration,30)");
    sip_cpl_run_abort(fake.run);
    sip_cpl_lookup_done(fake.run, SIP_CPL_LOOKUP_FAILURE, NULL);
    ck_assert_str_eq(fake.trace, "lookup(registration,30)");
    ck_assert_int_eq(fake.ended, 0);
    fake.lookup_answer = SIP_CPL_LOOKUP_SUCCESS;
    CK_TRACE(script, NULL, "lookup(registration,30) proxy(sip:bob@192.0.2.10/1000;t=20,r=1,o=0)");
    sip_cpl_run_abort(fake.run);
    sip_cpl_proxy_done(fake.run, SIP_CPL_PX_BUSY, 486, NULL);
    ck_assert_int_eq(fake.ended, 0);
    /* abort from inside the host's call: its answer is ignored */
    fake.abort_in_host = 1;
    CK_TRACE(script, NULL, "lookup(registration,30)");
    ck_assert_int_eq(fake.ended, 0);
    fake.abort_in_host = 0;
    /* answers given from inside the host's call are taken after it returns */
    fake.px[0] = SIP_CPL_PX_NOANSWER;
    fake.px[1] = 0;
    CK_TRACE(script, NULL, "lookup(registration,30) "
             "proxy(sip:bob@192.0.2.10/1000;t=20,r=1,o=0) end(PROXY_RESPONSE)");
    /* one compiled script, many runs at once: each has its own state */
    {
        const sip_cpl_script_t *sc = cpl_script(script);
        sip_cpl_run_t *a, *b;
        fake.lookup_answer = 0;
        fake.trace = NULL;
        a = sip_cpl_run_start(pool, sc, SIP_CPL_INCOMING, cpl_req_std(NULL), "o", CPL_NOON,
                              &fake_host, NULL);
        b = sip_cpl_run_start(pool, sc, SIP_CPL_INCOMING, cpl_req_std(NULL), "o", CPL_NOON,
                              &fake_host, NULL);
        fake.ended = 0;
        sip_cpl_lookup_done(b, SIP_CPL_LOOKUP_FAILURE, NULL);
        ck_assert_int_eq(fake.ended, 1);
        fake.ended = 0;
        fake.npx = 0;
        fake.px[0] = 0;
        sip_cpl_lookup_done(a, SIP_CPL_LOOKUP_SUCCESS, fake_list("sip:z@x", 0));
        ck_assert_str_eq(fake.trace, "lookup(registration,30) lookup(registration,30) "
                         "reject(503,-) end(ANSWERED) proxy(sip:z@x/1000;t=20,r=1,o=0) "
                         "end(ANSWERED)");
    }
}
END_TEST

/* A chain of 'n' subactions, each with 'logs' nested logs before the
 * next <sub>. */
static const char *cpl_chain(int n, int logs)
{
    char *s = apr_pstrdup(pool, "");
    int i, k;

    for (i = n - 1; i >= 0; i--) {
        s = apr_psprintf(pool, "%s<subaction id=\"s%d\">", s, i);
        for (k = 0; k < logs; k++)
            s = apr_pstrcat(pool, s, "<log>", NULL);
        s = i == n - 1 ? apr_pstrcat(pool, s, "<reject status=\"486\"/>", NULL)
                       : apr_psprintf(pool, "%s<sub ref=\"s%d\"/>", s, i + 1);
        for (k = 0; k < logs; k++)
            s = apr_pstrcat(pool, s, "</log>", NULL);
        s = apr_pstrcat(pool, s, "</subaction>", NULL);
    }
    return apr_pstrcat(pool, s, "<incoming><sub ref=\"s0\"/></incoming>", NULL);
}

START_TEST(cplrun_limits)
{
    const char *t;

    fake_reset();
    /* 64 <sub> are fine, 65 are not (§8) */
    CK_TRACE(cpl_chain(CPL_RUN_MAX_SUBS, 0), NULL, "reject(486,-) end(ANSWERED)");
    CK_TRACE(cpl_chain(CPL_RUN_MAX_SUBS + 1, 0), NULL, "end(FAILED,sub)");
    ck_assert_ptr_nonnull(strstr(fake.why, "<sub>"));
    /* nodes visited: 40 subactions of 30 logs each pass 1000 nodes */
    t = cpl_trace(cpl_chain(40, 30), NULL);
    ck_assert_ptr_nonnull(strstr(t, "end(FAILED,log)"));
    ck_assert_ptr_nonnull(strstr(fake.why, "nodes"));
    ck_assert_ptr_null(strstr(t, "reject"));
    /* near the element limit: compiles and runs quickly, one path walked */
    {
        char *s = apr_pstrdup(pool, "");
        const sip_cpl_script_t *sc;
        apr_time_t t0;
        int i;
        for (i = 0; i < 2400; i++)
            s = apr_psprintf(pool, "%s<subaction id=\"s%d\"><log><location url=\"sip:u%d@x\">"
                             "<redirect/></location></log></subaction>", s, i, i);
        s = apr_pstrcat(pool, s, "<incoming><sub ref=\"s2399\"/></incoming>", NULL);
        /* a bound against walking every path (exponential), not a speed
         * test: the building above is not timed, and a loaded machine has
         * a wide margin */
        t0 = apr_time_now();
        sc = cpl_script(s);
        ck_assert_int_eq(sc->nodes, 3 * 2400 + 1);
        CK_TRACE(s, NULL, "log(-,-) redirect(sip:u2399@x/1000;p=0) end(ANSWERED)");
        ck_assert_int_lt(apr_time_now() - t0, apr_time_from_sec(5));
    }
    /* proxies leading to proxies: each output walked, the set fresh each time */
    {
        char *s = apr_pstrdup(pool, "<reject status=\"486\"/>");
        int i;
        for (i = 0; i < 7; i++)
            s = apr_psprintf(pool, "<location url=\"sip:p%d@x\"><proxy><busy>%s</busy></proxy>"
                             "</location>", 6 - i, s);
        s = apr_pstrcat(pool, "<incoming>", s, "</incoming>", NULL);
        for (i = 0; i < 7; i++)
            fake.px[i] = SIP_CPL_PX_BUSY;
        t = cpl_trace(s, NULL);
        ck_assert_str_eq(t, "proxy(sip:p0@x/1000;t=20,r=1,o=0) proxy(sip:p1@x/1000;t=20,r=1,o=0) "
                         "proxy(sip:p2@x/1000;t=20,r=1,o=0) proxy(sip:p3@x/1000;t=20,r=1,o=0) "
                         "proxy(sip:p4@x/1000;t=20,r=1,o=0) proxy(sip:p5@x/1000;t=20,r=1,o=0) "
                         "proxy(sip:p6@x/1000;t=20,r=1,o=0) reject(486,-) end(ANSWERED)");
        memset(fake.px, 0, sizeof(fake.px));
    }
    /* a script that shares subactions compiles them once (a DAG, not a tree) */
    {
        char *s = apr_pstrdup(pool, "<subaction id=\"leaf\"><reject status=\"486\"/></subaction>");
        const sip_cpl_script_t *sc;
        int i;
        for (i = 0; i < 30; i++)
            s = apr_psprintf(pool, "%s<subaction id=\"d%d\"><address-switch field=\"origin\">"
                             "<address is=\"sip:a@x\"><sub ref=\"%s\"/></address>"
                             "<otherwise><sub ref=\"%s\"/></otherwise></address-switch>"
                             "</subaction>", s, i, i ? apr_psprintf(pool, "d%d", i - 1) : "leaf",
                             i ? apr_psprintf(pool, "d%d", i - 1) : "leaf");
        s = apr_psprintf(pool, "%s<incoming><sub ref=\"d29\"/></incoming>", s);
        sc = cpl_script(s);
        ck_assert_int_lt(sc->nodes, 200);       /* 2^30 if copied */
        CK_TRACE(s, NULL, "reject(486,-) end(ANSWERED)");
    }
}
END_TEST

/* RFC 3880 §16's example scripts (retyped), run on crafted calls. */
START_TEST(cplrun_rfc_examples)
{
    static const char redirect_unconditional[] =
        "<incoming><location url=\"sip:smith@phone.example.com\"><redirect/></location></incoming>";
    static const char forward_busy_noanswer[] =
        "<subaction id=\"voicemail\"><location url=\"sip:jones@voicemail.example.com\">"
        "<proxy/></location></subaction>"
        "<incoming><location url=\"sip:jones@jonespc.example.com\"><proxy timeout=\"8\">"
        "<busy><sub ref=\"voicemail\"/></busy><noanswer><sub ref=\"voicemail\"/></noanswer>"
        "</proxy></location></incoming>";
    static const char forward_redirect_default[] =
        "<incoming><location url=\"sip:jones@jonespc.example.com\">"
        "<proxy timeout=\"8\" recurse=\"no\"><redirection><redirect/></redirection>"
        "<default><location url=\"sip:jones@voicemail.example.com\"><proxy/></location>"
        "</default></proxy></location></incoming>";
    static const char screening[] =
        "<incoming><address-switch field=\"origin\" subfield=\"user\">"
        "<address is=\"anonymous\"><reject status=\"reject\" reason=\"I reject anonymous calls\"/>"
        "</address></address-switch></incoming>";
    static const char priority_language[] =
        "<incoming><priority-switch><priority greater=\"urgent\"/><otherwise>"
        "<language-switch><language matches=\"es\">"
        "<location url=\"sip:spanish@operator.example.com\"><proxy/></location></language>"
        "<otherwise><location url=\"sip:english@operator.example.com\"><proxy/></location>"
        "</otherwise></language-switch></otherwise></priority-switch></incoming>";
    static const char outgoing_screening[] =
        "<outgoing><address-switch field=\"original-destination\" subfield=\"tel\">"
        "<address subdomain-of=\"1900\"><reject status=\"reject\" "
        "reason=\"Not allowed to make 1-900 calls.\"/></address></address-switch></outgoing>";
    static const char location_filtering[] =
        "<incoming><lookup source=\"registration\"><success>"
        "<remove-location location=\"sip:jones@voicemail.example.com\"><proxy/></remove-location>"
        "</success></lookup></incoming>";
    static const char non_signalling[] =
        "<incoming><lookup source=\"http://www.example.com/cgi-bin/locate.cgi?user=jones\" "
        "timeout=\"8\"><success><proxy/></success><failure>"
        "<mail url=\"mailto:jones@example.com?subject=lookup%20failed\"/></failure></lookup>"
        "</incoming>";
    const sip_msg_t *jones = cpl_req("sip:jones@example.com", "\"A\" <sip:a@x.example>",
                                     "<sip:jones@example.com>", NULL);

    fake_reset();
    CK_TRACE(redirect_unconditional, jones,
             "redirect(sip:smith@phone.example.com/1000;p=0) end(ANSWERED)");
    fake.px[0] = SIP_CPL_PX_NOANSWER;
    fake.px[1] = 0;
    CK_TRACE(forward_busy_noanswer, jones,
             "proxy(sip:jones@jonespc.example.com/1000;t=8,r=1,o=0) "
             "proxy(sip:jones@voicemail.example.com/1000;t=20,r=1,o=0) end(ANSWERED)");
    fake.px[0] = 0;
    CK_TRACE(forward_busy_noanswer, jones,
             "proxy(sip:jones@jonespc.example.com/1000;t=8,r=1,o=0) end(ANSWERED)");
    fake.px[0] = SIP_CPL_PX_REDIRECTION;
    fake.px_contacts = "sip:jones@home.example.com";
    CK_TRACE(forward_redirect_default, jones,
             "proxy(sip:jones@jonespc.example.com/1000;t=8,r=0,o=0) "
             "redirect(sip:jones@home.example.com/1000;p=0) end(ANSWERED)");
    fake.px[0] = SIP_CPL_PX_FAILURE;
    CK_TRACE(forward_redirect_default, jones,
             "proxy(sip:jones@jonespc.example.com/1000;t=8,r=0,o=0) "
             "proxy(sip:jones@voicemail.example.com/1000;t=20,r=1,o=0) end(ANSWERED)");
    CK_TRACE(screening, cpl_req("sip:jones@example.com",
                                "Anonymous <sip:anonymous@anonymous.invalid>",
                                "<sip:jones@example.com>", NULL),
             "reject(603,I reject anonymous calls) end(ANSWERED)");
    CK_TRACE(screening, jones, "end(DEFAULT)");
    /* an emergency call gets no routing here: the default (empty set) */
    CK_TRACE(priority_language, cpl_req_std("Priority: emergency\r\nAccept-Language: es\r\n"),
             "end(DEFAULT)");
    fake.px[0] = 0;
    CK_TRACE(priority_language, cpl_req_std("Accept-Language: es, en;q=0.5\r\n"),
             "proxy(sip:spanish@operator.example.com/1000;t=20,r=1,o=0) end(ANSWERED)");
    CK_TRACE(priority_language, cpl_req_std("Priority: urgent\r\n"),
             "proxy(sip:english@operator.example.com/1000;t=20,r=1,o=0) end(ANSWERED)");
    ck_assert_str_eq(cpl_trace_dir(outgoing_screening, SIP_CPL_OUTGOING,
                                   cpl_req("sip:19005551212@gw.example.com;user=phone",
                                           "<sip:jones@example.com>",
                                           "<sip:19005551212@gw.example.com;user=phone>", NULL)),
                     "reject(603,Not allowed to make 1-900 calls.) end(ANSWERED)");
    ck_assert_str_eq(cpl_trace_dir(outgoing_screening, SIP_CPL_OUTGOING,
                                   cpl_req("sip:12125551212@gw.example.com;user=phone",
                                           "<sip:jones@example.com>",
                                           "<sip:12125551212@gw.example.com;user=phone>", NULL)),
                     "end(DEFAULT,sip:12125551212@gw.example.com;user=phone/1000)");
    fake.lookup_found = "sip:jones@jonespc.example.com/1000 sip:jones@voicemail.example.com/500";
    CK_TRACE(location_filtering, jones,
             "lookup(registration,30) proxy(sip:jones@jonespc.example.com/1000;t=20,r=1,o=0) "
             "end(ANSWERED)");
    fake.lookup_answer = SIP_CPL_LOOKUP_FAILURE;
    CK_TRACE(non_signalling, jones,
             "lookup(http://www.example.com/cgi-bin/locate.cgi?user=jones,8) "
             "mail(mailto:jones@example.com?subject=lookup%20failed) end(DEFAULT)");
}
END_TEST

/* 2025-12-08 is a Monday; New York is UTC-5 then */
#define CPL_MON(h, m) (((apr_time_t)1765152000 + (h) * 3600 + (m) * 60) * APR_USEC_PER_SEC)

static const char *cpl_trace_at(const char *inner, apr_time_t now)
{
    const sip_cpl_script_t *sc = cpl_script(inner);

    fake.trace = NULL;
    fake.ended = 0;
    fake.npx = 0;
    fake.run = sip_cpl_run_start(pool, sc, SIP_CPL_INCOMING, cpl_req_std(NULL), "o", now,
                                 &fake_host, NULL);
    return fake.trace ? fake.trace : "";
}

START_TEST(cplrun_time_switch)
{
    /* RFC 3880 §16's time-of-day routing, in the manner of its example */
    static const char office[] =
        "<incoming><time-switch tzid=\"America/New_York\" "
        "tzurl=\"http://zones.example.com/tz/America/New_York\">"
        "<time dtstart=\"20251201T090000\" duration=\"PT8H\" freq=\"weekly\" "
        "byday=\"MO,TU,WE,TH,FR\"><log name=\"office\"/></time>"
        "<not-present><log name=\"never\"/></not-present>"
        "<otherwise><log name=\"after hours\"/></otherwise>"
        "</time-switch></incoming>";
    static const char once[] =
        "<incoming><time-switch>"
        "<time dtstart=\"20251208T110000Z\" dtend=\"20251208T130000Z\"><reject status=\"busy\"/>"
        "</time><time dtstart=\"20251208T120000Z\" duration=\"PT4H\"><log name=\"second\"/>"
        "</time></time-switch></incoming>";

    fake_reset();
    ck_assert_str_eq(cpl_trace_at(office, CPL_MON(15, 0)), "log(office,-) end(DEFAULT)");
    ck_assert_str_eq(cpl_trace_at(office, CPL_MON(14, 0)), "log(office,-) end(DEFAULT)");
    ck_assert_str_eq(cpl_trace_at(office, CPL_MON(13, 59)), "log(after hours,-) end(DEFAULT)");
    ck_assert_str_eq(cpl_trace_at(office, CPL_MON(22, 0)), "log(after hours,-) end(DEFAULT)");
    ck_assert_str_eq(cpl_trace_at(office, CPL_NOON + apr_time_from_sec(3 * 3600)),
                     "log(after hours,-) end(DEFAULT)");        /* a Saturday */
    /* first match in document order; start inclusive, end exclusive */
    ck_assert_str_eq(cpl_trace_at(once, CPL_MON(11, 0)), "reject(486,-) end(ANSWERED)");
    ck_assert_str_eq(cpl_trace_at(once, CPL_MON(12, 30)), "reject(486,-) end(ANSWERED)");
    ck_assert_str_eq(cpl_trace_at(once, CPL_MON(13, 0)), "log(second,-) end(DEFAULT)");
    ck_assert_str_eq(cpl_trace_at(once, CPL_MON(16, 0)), "end(DEFAULT)");
    ck_assert_str_eq(cpl_trace_at(once, CPL_MON(10, 59)), "end(DEFAULT)");
    /* iCalendar values the schema lets through are refused at compile */
    ck_assert_ptr_nonnull(strstr(cpl_refusal("<incoming><time-switch tzid=\"Mars/Olympus\">"
                                             "<time dtstart=\"20251201T090000\" duration=\"PT1H\"/>"
                                             "</time-switch></incoming>"), "<time>"));
    ck_assert_ptr_nonnull(strstr(cpl_refusal("<incoming><time-switch>"
                                             "<time dtstart=\"yesterday\" duration=\"PT1H\"/>"
                                             "</time-switch></incoming>"), "<time>"));
    ck_assert_ptr_nonnull(strstr(cpl_refusal("<incoming><time-switch>"
                                             "<time dtstart=\"20251201T090000\" duration=\"8 hours\"/>"
                                             "</time-switch></incoming>"), "line"));
}
END_TEST

START_TEST(cplrun_message_helpers)
{
    sip_uri_parts_t u;

    /* sip_uri_parts: what address switches see */
    ck_assert(sip_uri_parts(pool, "SIPS:Bob:pw@Biloxi.Example.com:5071;user=phone;lr", &u));
    ck_assert_str_eq(u.scheme, "sips");
    ck_assert_str_eq(u.user, "Bob");
    ck_assert_str_eq(u.password, "pw");
    ck_assert_str_eq(u.host, "Biloxi.Example.com");
    ck_assert_str_eq(u.port, "5071");
    ck_assert_int_eq(u.user_phone, 1);
    ck_assert_ptr_null(u.opaque);
    ck_assert(sip_uri_parts(pool, "sip:gw.example.com", &u));
    ck_assert_ptr_null(u.user);
    ck_assert_ptr_null(u.port);
    ck_assert_int_eq(u.user_phone, 0);
    ck_assert(sip_uri_parts(pool, "Tel:+1-212-555-1234;phone-context=x", &u));
    ck_assert_str_eq(u.scheme, "tel");
    ck_assert_str_eq(u.opaque, "+1-212-555-1234;phone-context=x");
    ck_assert_ptr_null(u.host);
    ck_assert(!sip_uri_parts(pool, "no-scheme", &u));
    ck_assert(!sip_uri_parts(pool, ":x", &u));
    ck_assert(!sip_uri_parts(pool, NULL, &u));
    ck_assert(!sip_uri_parts(pool, "sip:", &u));
    /* sip_header_display: quotes off, quoted-pairs resolved */
    ck_assert_str_eq(sip_header_display(pool, "\"Alice \\\"A\\\" Smith\" <sip:a@x>;tag=1"),
                     "Alice \"A\" Smith");
    ck_assert_str_eq(sip_header_display(pool, "Bob Jones <sip:b@x>"), "Bob Jones");
    ck_assert_ptr_null(sip_header_display(pool, "<sip:b@x>;tag=2"));
    ck_assert_ptr_null(sip_header_display(pool, "sip:b@x;tag=2"));
    ck_assert_ptr_null(sip_header_display(pool, "\"\" <sip:b@x>"));
    ck_assert_ptr_null(sip_header_display(pool, NULL));
}
END_TEST

START_TEST(cplrun_compile_refusals)
{
    /* values the schema lets through that no call could use */
    static const struct { const char *inner, *why; } bad[] = {
        {"<incoming><location url=\"sip:a@x\" priority=\"1.5\"/></incoming>", "priority"},
        {"<incoming><location url=\"sip:a@x\" priority=\"-0.1\"/></incoming>", "priority"},
        {"<incoming><location url=\"sip:a@x\" priority=\"NaN\"/></incoming>", "priority"},
        /* in a subaction nothing uses, too */
        {"<subaction id=\"unused\"><reject status=\"200\"/></subaction>"
         "<incoming/>", "is not busy"},
        {"<incoming><location url=\"nocolon\"/></incoming>", "not a URI"},
        {"<incoming><location url=\"sip:\"/></incoming>", "not a URI"},
        {"<incoming><location url=\"sip:@\"/></incoming>", "not a URI"},
        {"<incoming><location url=\"mailto:bob@example.com\"/></incoming>", "sip:, sips: or tel:"},
        {"<incoming><location url=\"sip:a@x&#10;Via: evil\"/></incoming>", "not a URI"},
        {"<incoming><remove-location location=\"bad uri\"/></incoming>", "not a URI"},
        {"<incoming><reject status=\"200\"/></incoming>", "status"},
        {"<incoming><reject status=\"399\"/></incoming>", "status"},
        {"<incoming><reject status=\"700\"/></incoming>", "status"},
        {"<incoming><reject status=\"4861\"/></incoming>", "status"},
        {"<incoming><reject status=\"Busy\"/></incoming>", "status"},
        {"<incoming><reject status=\"busy\" reason=\"a&#13;&#10;Via: x\"/></incoming>",
         "reason"},
        {"<incoming><proxy timeout=\"99999999999999999999\"/></incoming>", "timeout"},
        {"<incoming><proxy timeout=\"3601\"/></incoming>", "timeout"},
        {"<incoming><lookup source=\"registration\" timeout=\"0\"/></incoming>", ""},
        {"<incoming><lookup source=\"\"/></incoming>", "source"},
        {"<incoming><mail url=\"http://example.com/\"/></incoming>", "mailto"},
        {"<incoming><mail url=\"mailto:a@example.com?subject=%0d%0aBcc:%20x@y\"/></incoming>",
         "url:"},
        {"<incoming><mail url=\"mailto:a@example.com?bcc=x@y\"/></incoming>", "url:"},
        {"<incoming><address-switch field=\"from\"/></incoming>", "field"},
        {"<incoming><address-switch field=\"origin\" subfield=\"nick\"/></incoming>",
         "subfield"},
        {"<incoming><address-switch field=\"origin\" subfield=\"port\">"
         "<address is=\"http\"/></address-switch></incoming>", "port"},
        {"<incoming><address-switch field=\"origin\" subfield=\"port\">"
         "<address is=\"65536\"/></address-switch></incoming>", "port"},
        {"<incoming><address-switch field=\"origin\" subfield=\"tel\">"
         "<address subdomain-of=\"abc;x\"/></address-switch></incoming>", "telephone"},
        {"<incoming><address-switch field=\"origin\">"
         "<address is=\"alice\"/></address-switch></incoming>", "not a URI"},
        {"<incoming><string-switch field=\"subject\"><string/></string-switch></incoming>",
         "exactly one"},
        {"<incoming><string-switch field=\"subject\"><string is=\"a\" contains=\"b\"/>"
         "</string-switch></incoming>", "exactly one"},
        {"<incoming><language-switch><language matches=\"english language\"/>"
         "</language-switch></incoming>", "language tag"},
        {"<incoming><language-switch><language matches=\"*\"/></language-switch></incoming>",
         "language tag"},
        {"<incoming><language-switch><language matches=\"toolongtag\"/></language-switch>"
         "</incoming>", "language tag"},
        {"<incoming><priority-switch><priority equal=\"\"/></priority-switch></incoming>",
         "priority"},
    };
    unsigned i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = cpl_refusal(bad[i].inner), *c;
        ck_assert_msg(strstr(why, bad[i].why) != NULL, "%s: why \"%s\"", bad[i].inner, why);
        ck_assert_ptr_nonnull(strstr(why, "line"));
        for (c = why; *c; c++)
            ck_assert(*c >= 0x20 && *c <= 0x7e);
    }
    /* and what is fine: the boundaries */
    cpl_script("<incoming><location url=\"sip:a@x\" priority=\"0.0\"><location url=\"tel:+1\" "
               "priority=\"1\"><proxy timeout=\"3600\"/></location></location></incoming>");
    cpl_script("<incoming><reject status=\"400\"/></incoming>");
    cpl_script("<incoming><location url=\"sip:gw.example.com;transport=tcp\"/></incoming>");
    cpl_script("<incoming><language-switch><language matches=\"de-CH\"/><language "
               "matches=\"i-klingon\"/></language-switch></incoming>");
    cpl_script("<incoming><priority-switch><priority equal=\"x-custom\"/></priority-switch>"
               "</incoming>");
}
END_TEST

static Suite *cplrun_suite(void)
{
    Suite *s = suite_create("cpl_run");
    TCase *tc = tcase_create("run");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, cplrun_location_proxy_redirect_reject);
    tcase_add_test(tc, cplrun_proxy_outputs);
    tcase_add_test(tc, cplrun_address_switch);
    tcase_add_test(tc, cplrun_compile_refusals);
    tcase_add_test(tc, cplrun_string_language_priority);
    tcase_add_test(tc, cplrun_lookup_remove_location);
    tcase_add_test(tc, cplrun_sub_log_mail);
    tcase_add_test(tc, cplrun_async);
    tcase_add_test(tc, cplrun_limits);
    tcase_add_test(tc, cplrun_rfc_examples);
    tcase_add_test(tc, cplrun_time_switch);
    tcase_add_test(tc, cplrun_message_helpers);
    suite_add_tcase(s, tc);
    return s;
}

/* ------------------------------------------------------------------ */
/* sip_cpl_time: RFC 3880 §4.4 time switches on fixed clocks           */

/* A <time> from its attribute pairs, NULL-terminated. */
static sip_cpl_time_t *ctime_v(const char *tzid, const char **why, va_list ap)
{
    const char *attrs[40];
    int n = 0;
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 38)
        attrs[n++] = a;
    attrs[n] = NULL;
    return sip_cpl_time_compile(pool, tzid, NULL, attrs, why);
}

static sip_cpl_time_t *ctime_ok(const char *tzid, ...)
{
    const char *why = NULL;
    va_list ap;
    va_start(ap, tzid);
    sip_cpl_time_t *t = ctime_v(tzid, &why, ap);
    va_end(ap);
    ck_assert_msg(t != NULL, "refused: %s", why ? why : "(no reason)");
    return t;
}

/* The reason a <time> is refused (fails the test when it is not). */
static const char *ctime_refused(const char *tzid, ...)
{
    const char *why = NULL;
    va_list ap;
    va_start(ap, tzid);
    sip_cpl_time_t *t = ctime_v(tzid, &why, ap);
    va_end(ap);
    ck_assert_msg(t == NULL, "accepted");
    ck_assert_ptr_nonnull(why);
    ck_assert_int_gt(strlen(why), 3);
    for (const char *c = why; *c; c++)
        ck_assert_msg(*c >= 0x20 && *c < 0x7f, "unprintable reason");
    return why;
}

/* "YYYYMMDDTHHMMSSZ" as an apr_time_t */
static apr_time_t utc_at(const char *s)
{
    struct tm tm = {0};
    ck_assert_ptr_nonnull(strptime(s, "%Y%m%dT%H%M%SZ", &tm));
    return apr_time_from_sec(timegm(&tm));
}

static int time_in(const sip_cpl_time_t *t, const char *s)
{
    return sip_cpl_time_match(t, utc_at(s));
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* RFC 3880 §16 (and §4.4's example): weekday business hours in New York,
 * across both DST changes; start inclusive, end exclusive. */
START_TEST(ctime_business_hours)
{
    sip_cpl_time_t *t = ctime_ok("America/New_York", "dtstart", "20000703T090000",
                                 "duration", "PT8H", "freq", "weekly",
                                 "byday", "MO,TU,WE,TH,FR", NULL);
    /* Monday 2026-12-07, EST (UTC-5): 09:00-17:00 is 14:00Z-22:00Z */
    ck_assert(!time_in(t, "20261207T135959Z"));
    ck_assert(time_in(t, "20261207T140000Z"));
    ck_assert(time_in(t, "20261207T215959Z"));
    ck_assert(!time_in(t, "20261207T220000Z"));
    ck_assert(!sip_cpl_time_match(t, utc_at("20261207T140000Z") - 1));
    ck_assert(sip_cpl_time_match(t, utc_at("20261207T220000Z") - 1));
    /* Saturday, Sunday */
    ck_assert(!time_in(t, "20261212T150000Z"));
    ck_assert(!time_in(t, "20261213T150000Z"));
    /* Monday 2026-07-06, EDT (UTC-4): 13:00Z-21:00Z */
    ck_assert(!time_in(t, "20260706T125959Z"));
    ck_assert(time_in(t, "20260706T130000Z"));
    ck_assert(!time_in(t, "20260706T210000Z"));
    /* before dtstart */
    ck_assert(!time_in(t, "20000630T150000Z"));
    ck_assert(time_in(t, "20000703T130000Z"));
}
END_TEST

/* "The last Friday of the month" (a §16-style monthly rule), all day. */
START_TEST(ctime_last_friday)
{
    sip_cpl_time_t *t = ctime_ok("Europe/Paris", "dtstart", "20260130T000000",
                                 "duration", "P1D", "freq", "monthly", "byday", "-1FR", NULL);
    ck_assert(time_in(t, "20261225T120000Z"));      /* Dec 2026: the 25th */
    ck_assert(!time_in(t, "20261218T120000Z"));
    ck_assert(time_in(t, "20261224T230000Z"));      /* 00:00 CET */
    ck_assert(!time_in(t, "20261224T225959Z"));
    ck_assert(time_in(t, "20270129T120000Z"));      /* Jan 2027: the 29th */
    ck_assert(!time_in(t, "20270122T120000Z"));
    ck_assert(time_in(t, "20260731T120000Z"));      /* summer time */
}
END_TEST

START_TEST(ctime_yearly)
{
    sip_cpl_time_t *t = ctime_ok(NULL, "dtstart", "19900704T000000Z", "duration", "P1D",
                                 "freq", "YEARLY", NULL);
    ck_assert(time_in(t, "20260704T000000Z"));
    ck_assert(time_in(t, "20260704T235959Z"));
    ck_assert(!time_in(t, "20260705T000000Z"));
    ck_assert(!time_in(t, "20260703T235959Z"));
    ck_assert(time_in(t, "21000704T120000Z"));
    /* February 29th: leap years only */
    t = ctime_ok(NULL, "dtstart", "20240229T000000Z", "duration", "P1D", "freq", "yearly",
                 "bymonth", "2", "bymonthday", "29", NULL);
    ck_assert(time_in(t, "20280229T100000Z"));
    ck_assert(!time_in(t, "20270228T100000Z"));
    ck_assert(!time_in(t, "20270301T100000Z"));
}
END_TEST

START_TEST(ctime_count_until)
{
    sip_cpl_time_t *t = ctime_ok(NULL, "dtstart", "20261201T090000Z", "duration", "PT1H",
                                 "freq", "daily", "count", "3", NULL);
    ck_assert(!time_in(t, "20261201T085959Z"));
    ck_assert(time_in(t, "20261201T090000Z"));
    ck_assert(time_in(t, "20261203T095959Z"));      /* the third */
    ck_assert(!time_in(t, "20261204T093000Z"));     /* no fourth */
    ck_assert(!time_in(t, "20300101T093000Z"));
    /* count=1: dtstart only */
    t = ctime_ok(NULL, "dtstart", "20261201T090000Z", "duration", "PT1H", "freq", "daily",
                 "count", "1", NULL);
    ck_assert(time_in(t, "20261201T093000Z"));
    ck_assert(!time_in(t, "20261202T093000Z"));
    /* until is inclusive (RFC 5545 §3.3.10) */
    t = ctime_ok(NULL, "dtstart", "20261201T090000Z", "duration", "PT1H", "freq", "daily",
                 "until", "20261203T090000Z", NULL);
    ck_assert(time_in(t, "20261203T093000Z"));
    ck_assert(!time_in(t, "20261204T093000Z"));
    t = ctime_ok(NULL, "dtstart", "20261201T090000Z", "duration", "PT1H", "freq", "daily",
                 "until", "20261203T085959Z", NULL);
    ck_assert(time_in(t, "20261202T093000Z"));
    ck_assert(!time_in(t, "20261203T093000Z"));
    /* a DATE until: that whole day */
    t = ctime_ok(NULL, "dtstart", "20261201T090000Z", "duration", "PT1H", "freq", "daily",
                 "until", "20261203", NULL);
    ck_assert(time_in(t, "20261203T093000Z"));
    ck_assert(!time_in(t, "20261204T093000Z"));
    /* a local until in a zone: 09:00 New York is 14:00Z */
    t = ctime_ok("America/New_York", "dtstart", "20261201T090000", "duration", "PT1H",
                 "freq", "daily", "until", "20261203T090000", NULL);
    ck_assert(time_in(t, "20261203T143000Z"));
    ck_assert(!time_in(t, "20261204T143000Z"));
    /* count with an interval */
    t = ctime_ok(NULL, "dtstart", "20261201T090000Z", "duration", "PT1H", "freq", "weekly",
                 "interval", "2", "count", "2", NULL);
    ck_assert(time_in(t, "20261215T093000Z"));
    ck_assert(!time_in(t, "20261208T093000Z"));
    ck_assert(!time_in(t, "20261229T093000Z"));
}
END_TEST

/* RFC 5545 §3.3.5 as RFC 3880 §4.4.1 takes it: the skipped hour, the
 * repeated hour, nominal against exact durations. */
START_TEST(ctime_dst)
{
    /* daily at 02:30 New York; 2026-03-08 has no 02:30: read with EST,
     * that is 07:30Z (03:30 EDT) */
    sip_cpl_time_t *t = ctime_ok("America/New_York", "dtstart", "20260301T023000",
                                 "duration", "PT30M", "freq", "daily", NULL);
    ck_assert(time_in(t, "20260307T074500Z"));      /* EST, 02:45 */
    ck_assert(time_in(t, "20260308T074500Z"));      /* the gap day */
    ck_assert(!time_in(t, "20260308T071500Z"));
    ck_assert(time_in(t, "20260309T064500Z"));      /* EDT, 02:45 */
    ck_assert(!time_in(t, "20260309T074500Z"));
    /* 2026-11-01 01:30 happens twice: the first (EDT, 05:30Z) counts */
    t = ctime_ok("America/New_York", "dtstart", "20261025T013000", "duration", "PT30M",
                 "freq", "daily", NULL);
    ck_assert(time_in(t, "20261101T054500Z"));
    ck_assert(!time_in(t, "20261101T064500Z"));
    ck_assert(time_in(t, "20261102T064500Z"));      /* EST */
    /* P1D is a calendar day: 23 hours on the spring-forward day */
    t = ctime_ok("America/New_York", "dtstart", "20260307T120000", "duration", "P1D", NULL);
    ck_assert(time_in(t, "20260307T170000Z"));
    ck_assert(time_in(t, "20260308T155959Z"));
    ck_assert(!time_in(t, "20260308T160000Z"));
    /* PT24H and dtend are exact */
    t = ctime_ok("America/New_York", "dtstart", "20260307T120000", "duration", "PT24H", NULL);
    ck_assert(time_in(t, "20260308T165959Z"));
    ck_assert(!time_in(t, "20260308T170000Z"));
    t = ctime_ok("America/New_York", "dtstart", "20260307T120000",
                 "dtend", "20260308T120000", NULL);    /* 23 h of real time */
    ck_assert(time_in(t, "20260308T155959Z"));
    ck_assert(!time_in(t, "20260308T160000Z"));
    /* a weekly rule keeps its wall time across the change */
    t = ctime_ok("Europe/Paris", "dtstart", "20260301T080000", "duration", "PT1H",
                 "freq", "weekly", NULL);
    ck_assert(time_in(t, "20260322T070000Z"));      /* CET */
    ck_assert(time_in(t, "20260329T060000Z"));      /* CEST from that day */
    ck_assert(!time_in(t, "20260329T070000Z"));
}
END_TEST

/* Floating times are the server's local time (RFC 3880 §4.4.1). */
START_TEST(ctime_floating)
{
    setenv("TZ", "Europe/Paris", 1);
    tzset();
    sip_cpl_time_t *t = ctime_ok(NULL, "dtstart", "20261206T090000", "duration", "PT1H", NULL);
    ck_assert(time_in(t, "20261206T080000Z"));
    ck_assert(!time_in(t, "20261206T090000Z"));
    t = ctime_ok(NULL, "dtstart", "20260301T090000", "duration", "PT1H", "freq", "daily", NULL);
    ck_assert(time_in(t, "20260320T083000Z"));      /* CET */
    ck_assert(time_in(t, "20260330T073000Z"));      /* CEST */
    ck_assert(!time_in(t, "20260330T083000Z"));
    /* 'Z' is UTC whatever the zone */
    t = ctime_ok("Asia/Tokyo", "dtstart", "20261206T090000Z", "duration", "PT1H", NULL);
    ck_assert(time_in(t, "20261206T093000Z"));
}
END_TEST

START_TEST(ctime_by_parts)
{
    /* byhour, byminute, bysecond: 09:30:15 and 17:30:15 for 10 s */
    sip_cpl_time_t *t = ctime_ok(NULL, "dtstart", "20261201T000000Z", "duration", "PT10S",
                                 "freq", "daily", "byhour", "9,17", "byminute", "30",
                                 "bysecond", "15", NULL);
    ck_assert(time_in(t, "20261206T093015Z"));
    ck_assert(time_in(t, "20261206T173024Z"));
    ck_assert(!time_in(t, "20261206T173025Z"));
    ck_assert(!time_in(t, "20261206T093014Z"));
    ck_assert(!time_in(t, "20261206T103015Z"));
    /* bymonthday=-1: the last day of each month */
    t = ctime_ok(NULL, "dtstart", "20260131T000000Z", "duration", "P1D", "freq", "monthly",
                 "bymonthday", "-1", NULL);
    ck_assert(time_in(t, "20260228T120000Z"));
    ck_assert(!time_in(t, "20260227T120000Z"));
    ck_assert(time_in(t, "20281231T120000Z"));
    /* byyearday=100: April 10th in 2026 */
    t = ctime_ok(NULL, "dtstart", "20260101T000000Z", "duration", "P1D", "freq", "yearly",
                 "byyearday", "100", NULL);
    ck_assert(time_in(t, "20260410T120000Z"));
    ck_assert(!time_in(t, "20260409T120000Z"));
    /* byweekno=1 byday=MO: Monday of ISO week 1 (2027-01-04) */
    t = ctime_ok(NULL, "dtstart", "20260101T000000Z", "duration", "P1D", "freq", "yearly",
                 "byweekno", "1", "byday", "MO", NULL);
    ck_assert(time_in(t, "20270104T120000Z"));
    ck_assert(!time_in(t, "20270111T120000Z"));
    /* bysetpos=-1 over weekdays: the last weekday of the month */
    t = ctime_ok(NULL, "dtstart", "20260101T170000Z", "duration", "PT1H", "freq", "monthly",
                 "byday", "MO,TU,WE,TH,FR", "bysetpos", "-1", NULL);
    ck_assert(time_in(t, "20261231T173000Z"));      /* Thursday */
    ck_assert(!time_in(t, "20261230T173000Z"));
    ck_assert(time_in(t, "20260130T173000Z"));      /* Friday 30th (31st a Saturday) */
    ck_assert(!time_in(t, "20260131T173000Z"));
    /* wkst changes which days an every-other-week rule takes
     * (RFC 5545 §3.8.5.3's example) */
    t = ctime_ok(NULL, "dtstart", "19970805T090000Z", "duration", "PT1H", "freq", "weekly",
                 "interval", "2", "count", "4", "byday", "TU,SU", "wkst", "MO", NULL);
    ck_assert(time_in(t, "19970810T093000Z"));
    ck_assert(!time_in(t, "19970817T093000Z"));
    ck_assert(time_in(t, "19970824T093000Z"));
    t = ctime_ok(NULL, "dtstart", "19970805T090000Z", "duration", "PT1H", "freq", "weekly",
                 "interval", "2", "count", "4", "byday", "TU,SU", "wkst", "su", NULL);
    ck_assert(!time_in(t, "19970810T093000Z"));
    ck_assert(time_in(t, "19970817T093000Z"));
    ck_assert(time_in(t, "19970831T093000Z"));
    ck_assert(!time_in(t, "19970902T093000Z"));     /* count reached */
    /* byday with a position in a yearly rule: 20th Monday */
    t = ctime_ok(NULL, "dtstart", "20260101T000000Z", "duration", "P1D", "freq", "yearly",
                 "byday", "20MO", NULL);
    ck_assert(time_in(t, "20260518T120000Z"));
    ck_assert(!time_in(t, "20260511T120000Z"));
}
END_TEST

/* Sub-daily frequencies with an interval keep dtstart's phase however far
 * 'now' is (libical's set_start alone would not). */
START_TEST(ctime_subdaily_phase)
{
    sip_cpl_time_t *t = ctime_ok(NULL, "dtstart", "20261201T000000Z", "duration", "PT1M",
                                 "freq", "hourly", "interval", "7", NULL);
    /* Dec 6 00:00 is 120 h later; 126 h is Dec 6 06:00 */
    ck_assert(time_in(t, "20261206T060030Z"));
    ck_assert(!time_in(t, "20261206T050030Z"));
    ck_assert(!time_in(t, "20261206T070030Z"));
    t = ctime_ok(NULL, "dtstart", "20260101T000000Z", "duration", "PT1S", "freq", "secondly",
                 "interval", "17", NULL);
    apr_time_t base = utc_at("20260101T000000Z");
    for (apr_int64_t k = 1000000; k < 1000010; k++) {
        ck_assert(sip_cpl_time_match(t, base + apr_time_from_sec(17 * k)));
        ck_assert(!sip_cpl_time_match(t, base + apr_time_from_sec(17 * k + 1)));
    }
    t = ctime_ok(NULL, "dtstart", "20260101T000500Z", "duration", "PT1M", "freq", "minutely",
                 "interval", "13", NULL);
    /* minutes from Jan 1 00:05 to 2026-06-01 09:00, then the next multiple of 13 */
    apr_int64_t m = (utc_at("20260601T090000Z") - utc_at("20260101T000500Z"))
                    / apr_time_from_sec(60);
    apr_int64_t first = m + (13 - m % 13) % 13;
    apr_time_t hit = utc_at("20260101T000500Z") + apr_time_from_sec(60 * first);
    ck_assert(sip_cpl_time_match(t, hit));
    ck_assert(!sip_cpl_time_match(t, hit - apr_time_from_sec(60)));
    ck_assert(sip_cpl_time_match(t, hit + apr_time_from_sec(13 * 60)));
    /* by-parts below daily: libical loses the phase there, refused */
    ctime_refused(NULL, "dtstart", "20260101T000500Z", "duration", "PT1M", "freq", "minutely",
                  "interval", "13", "byhour", "9", NULL);
    ctime_refused(NULL, "dtstart", "20260101T000500Z", "duration", "PT1M", "freq", "hourly",
                  "byday", "MO", NULL);
}
END_TEST

/* What set_start positioning finds, against libical iterating from dtstart
 * (the slow way) at instants spread over years, DST changes included. */
static int ctime_brute(const sip_cpl_time_t *t, apr_time_t now)
{
    apr_int64_t n = apr_time_sec(now);
    if (n < t->dtstart_i)
        return 0;
    icalrecur_iterator *it = icalrecur_iterator_new(t->rule, t->dtstart);
    struct icaltimetype occ;
    int hit = 0;
    while (!icaltime_is_null_time(occ = icalrecur_iterator_next(it))) {
        apr_int64_t w = ct_wall_secs(occ), s = ct_wall_to_instant(t, w, NULL);
        if (t->bounded && s > t->last_i)
            break;
        if (s > n + 2 * SIP_CPL_TIME_DST_SLACK)
            break;
        if (s <= n && n < ct_occurrence_end(t, w, s))
            hit = 1;
    }
    icalrecur_iterator_free(it);
    return hit;
}

START_TEST(ctime_against_iteration)
{
    static const char *const rules[][12] = {
        {"freq", "weekly", "interval", "2", "byday", "MO,WE", "duration", "PT9H", NULL},
        {"freq", "monthly", "byday", "-1FR", "duration", "P1D", NULL},
        {"freq", "hourly", "interval", "7", "duration", "PT2H", NULL},
        {"freq", "minutely", "interval", "613", "duration", "PT5M", NULL},
        {"freq", "daily", "interval", "3", "byhour", "2,3", "duration", "PT90M", NULL},
        {"freq", "yearly", "bymonth", "3,11", "byday", "1SU,2SU", "duration", "PT26H", NULL},
        {"freq", "monthly", "interval", "5", "bymonthday", "31", "duration", "P2D", NULL},
        {"freq", "weekly", "byday", "SU", "duration", "P8D", NULL},     /* overlapping */
        {"freq", "daily", "count", "500", "duration", "PT3H", NULL},
        {"freq", "hourly", "interval", "5", "until", "20260401T000000Z", "duration", "PT10M",
         NULL},
        {"freq", "monthly", "byday", "MO,TU,WE,TH,FR", "bysetpos", "1,-1", "duration",
         "PT12H", NULL},
    };
    unsigned seed = 42;
    for (apr_size_t r = 0; r < sizeof(rules) / sizeof(rules[0]); r++) {
        const char *attrs[16] = {"dtstart", "20250105T013000"};
        int n = 2;
        for (int i = 0; rules[r][i]; i++)
            attrs[n++] = rules[r][i];
        attrs[n] = NULL;
        const char *why = NULL;
        sip_cpl_time_t *t = sip_cpl_time_compile(pool, "America/New_York", NULL, attrs, &why);
        ck_assert_msg(t != NULL, "rule %d refused: %s", (int)r, why);
        apr_int64_t lo = utc_at("20250101T000000Z") / APR_USEC_PER_SEC;
        for (int k = 0; k < 150; k++) {
            apr_int64_t x = lo + (apr_int64_t)(rand_r(&seed) % (3 * 366 * 86400));
            /* and the seconds around the two DST changes of 2026 */
            if (k % 5 == 0)
                x = utc_at(k % 10 ? "20260308T070000Z" : "20261101T050000Z")
                    / APR_USEC_PER_SEC + rand_r(&seed) % 14400 - 7200;
            apr_time_t now = apr_time_from_sec(x);
            ck_assert_msg(sip_cpl_time_match(t, now) == ctime_brute(t, now),
                          "rule %d at %lld", (int)r, (long long)x);
        }
    }
}
END_TEST

/* The same rules judged by glibc's reading of the tz database (localtime_r
 * with TZ set), not libical's: business hours and the last Friday of the
 * month in New York, at random instants over forty years. */
START_TEST(ctime_against_glibc)
{
    sip_cpl_time_t *hours = ctime_ok("America/New_York", "dtstart", "20000703T090000",
                                     "duration", "PT8H", "freq", "weekly",
                                     "byday", "MO,TU,WE,TH,FR", NULL);
    sip_cpl_time_t *friday = ctime_ok("America/New_York", "dtstart", "20000128T000000",
                                      "duration", "P1D", "freq", "monthly", "byday", "-1FR",
                                      NULL);
    sip_cpl_time_t *yearly = ctime_ok("America/New_York", "dtstart", "20001224T180000",
                                      "dtend", "20001226T000000", "freq", "yearly", NULL);
    setenv("TZ", "America/New_York", 1);
    tzset();
    unsigned seed = 7;
    apr_int64_t lo = utc_at("20000801T000000Z") / APR_USEC_PER_SEC;
    for (int k = 0; k < 8000; k++) {
        time_t x = (time_t)(lo + (apr_int64_t)rand_r(&seed) * 40 * 366 / RAND_MAX * 86400
                            + rand_r(&seed) % 86400);
        struct tm tm;
        localtime_r(&x, &tm);
        int busy = tm.tm_wday >= 1 && tm.tm_wday <= 5 && tm.tm_hour >= 9 && tm.tm_hour < 17;
        int mdays = icaltime_days_in_month(tm.tm_mon + 1, tm.tm_year + 1900);
        int last_friday = tm.tm_wday == 5 && tm.tm_mday + 7 > mdays;
        /* 30 h of real time from Dec 24 18:00 (exact, dtend - dtstart) */
        struct tm start = {.tm_year = tm.tm_year, .tm_mon = 11, .tm_mday = 24, .tm_hour = 18,
                           .tm_isdst = -1};
        time_t s0 = mktime(&start);
        int xmas = x >= s0 && x < s0 + 30 * 3600;
        apr_time_t now = apr_time_from_sec(x);
        ck_assert_msg(sip_cpl_time_match(hours, now) == busy, "hours at %lld", (long long)x);
        ck_assert_msg(sip_cpl_time_match(friday, now) == last_friday, "friday at %lld",
                      (long long)x);
        ck_assert_msg(sip_cpl_time_match(yearly, now) == xmas, "xmas at %lld", (long long)x);
    }
}
END_TEST

/* Hostile: huge counts, tiny intervals, far away 'now'; each match stays
 * within a bound and gives the right answer. */
START_TEST(ctime_hostile)
{
    /* a count libical's calendar never reaches: compiled, matches */
    sip_cpl_time_t *t = ctime_ok(NULL, "dtstart", "20000101T000000Z", "duration", "P1D",
                                 "freq", "yearly", "count", "4000000000", NULL);
    ck_assert(time_in(t, "20260101T120000Z"));
    ck_assert(!time_in(t, "20260102T120000Z"));
    /* one it would take too long to count is refused, quickly */
    double t0 = now_ms();
    const char *why = ctime_refused(NULL, "dtstart", "20000101T000000Z", "duration", "PT1S",
                                    "freq", "secondly", "count", "1000000000", NULL);
    ck_assert_ptr_nonnull(strstr(why, "count"));
    ck_assert_double_lt(now_ms() - t0, 500);
    /* every second for a day from every second: one step per match */
    t = ctime_ok(NULL, "dtstart", "20000101T000000Z", "duration", "P1D", "freq", "secondly",
                 NULL);
    t0 = now_ms();
    for (int i = 0; i < 100; i++)
        ck_assert(sip_cpl_time_match(t, utc_at("20261206T101010Z") + apr_time_from_sec(i)));
    ck_assert_double_lt(now_ms() - t0, 500);
    /* the same near a DST change in a zone */
    t = ctime_ok("America/New_York", "dtstart", "20000101T000000", "duration", "PT1S",
                 "freq", "secondly", "interval", "2", NULL);
    t0 = now_ms();
    ck_assert(time_in(t, "20260308T080000Z"));
    ck_assert(!time_in(t, "20260308T080001Z"));
    ck_assert_double_lt(now_ms() - t0, 500);
    /* yearly, every 10 minutes of dtstart's day (January 1st) */
    const char *hours = "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23";
    t = ctime_ok(NULL, "dtstart", "20000101T000000Z", "duration", "PT1S", "freq", "yearly",
                 "byhour", hours, "byminute", "0,10,20,30,40,50", NULL);
    t0 = now_ms();
    ck_assert(time_in(t, "20270101T235000Z"));
    ck_assert(!time_in(t, "20270101T235001Z"));
    ck_assert(!time_in(t, "20261206T102000Z"));
    ck_assert_double_lt(now_ms() - t0, 500);
    /* every hour of every day of a yearly rule: too many per period */
    t0 = now_ms();
    why = ctime_refused(NULL, "dtstart", "20000101T000000Z", "duration", "PT1S", "freq",
                        "yearly", "bymonth", "1,2,3,4,5,6,7,8,9,10,11,12",
                        "bymonthday", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,"
                        "19,20,21,22,23,24,25,26,27,28,29,30,31", "byhour", hours, NULL);
    ck_assert_ptr_nonnull(strstr(why, "occurrences"));
    ck_assert_double_lt(now_ms() - t0, 500);
    /* far future and far past 'now' */
    t = ctime_ok("America/New_York", "dtstart", "20000703T090000", "duration", "PT8H",
                 "freq", "weekly", "byday", "MO,TU,WE,TH,FR", NULL);
    t0 = now_ms();
    ck_assert(!sip_cpl_time_match(t, apr_time_from_sec((apr_int64_t)253402300799)));
    ck_assert(!sip_cpl_time_match(t, (apr_time_t)INT64_MAX));
    ck_assert(!sip_cpl_time_match(t, (apr_time_t)INT64_MIN));
    ck_assert(!sip_cpl_time_match(t, 0));
    ck_assert_double_lt(now_ms() - t0, 500);
}
END_TEST

START_TEST(ctime_refusals)
{
    const char *d = "20261206T090000";
    ck_assert_str_eq(ctime_refused("Mars/Olympus_Mons", "dtstart", d, "duration", "PT1H",
                                   NULL), "unknown tzid");
    ctime_refused("../../etc/passwd", "dtstart", d, "duration", "PT1H", NULL);
    ctime_refused("", "dtstart", d, "duration", "PT1H", NULL);
    ctime_refused(NULL, "duration", "PT1H", NULL);
    ctime_refused(NULL, "dtstart", d, NULL);
    ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "dtend", "20261206T100000", NULL);
    ck_assert_ptr_nonnull(strstr(ctime_refused(NULL, "dtstart", d, "dtend", "20261206T080000",
                                               NULL), "dtend"));
    ctime_refused(NULL, "dtstart", d, "dtend", d, NULL);
    static const char *const bad_dates[] = {
        "20260230T090000", "2026-12-06T09:00:00", "20261206T250000", "20261206T096000",
        "20261206", "20261206T0900", "20261206T090000z", "20261206X090000", "19691231T235959Z",
        "25010101T000000", "20261206T090000ZZ", "", "+0261206T090000", NULL
    };
    for (int i = 0; bad_dates[i]; i++)
        ctime_refused(NULL, "dtstart", bad_dates[i], "duration", "PT1H", NULL);
    static const char *const bad_durations[] = {
        "P", "PT", "-PT1H", "P1W1D", "PT0S", "P0D", "PT1H1H", "PT1M1H", "P1H", "PT1D", "1H",
        "P1DT", "PT1234567S", "P9999D", "PT1.5H", NULL
    };
    for (int i = 0; bad_durations[i]; i++)
        ctime_refused(NULL, "dtstart", d, "duration", bad_durations[i], NULL);
    ck_assert_ptr_nonnull(strstr(ctime_refused(NULL, "dtstart", d, "duration", "PT1H",
        "freq", "daily", "count", "3", "until", "20270101T000000Z", NULL), "count"));
    ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "freq", "daily", "until",
                  "20261201T000000", NULL);
    ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "freq", "fortnightly", NULL);
    /* without freq the recurrence parts mean nothing: one period */
    sip_cpl_time_t *once = ctime_ok(NULL, "dtstart", "20261206T090000Z", "duration", "PT1H",
                                    "interval", "1", "byday", "MO", "count", "5", NULL);
    ck_assert(time_in(once, "20261206T093000Z"));                  /* a Sunday */
    ck_assert(!time_in(once, "20261207T093000Z"));
    ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "colour", "blue", NULL);
    ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "dtstart", d, NULL);
    static const char *const bad_lists[][2] = {
        {"byday", "MO,,TU"}, {"byday", "XX"}, {"byday", "0MO"}, {"byday", "54MO"},
        {"byday", "+MO"}, {"byday", "MO,"}, {"byday", "MONDAY"}, {"byday", ""},
        {"byhour", "24"}, {"byhour", "1,,2"}, {"byhour", "-1"}, {"byhour", "1;FREQ=SECONDLY"},
        {"byminute", "60"}, {"bysecond", "61"}, {"bymonthday", "0"}, {"bymonthday", "32"},
        {"byyearday", "367"}, {"byweekno", "54"}, {"bymonth", "13"}, {"bymonth", "0"},
        {"bysetpos", "0"}, {"interval", "0"}, {"interval", "40000"}, {"interval", "1x"},
        {"interval", "-2"}, {"count", "0"}, {"count", "99999999999"}, {"wkst", "XX"},
        {"wkst", "MON"}, {"byhour", "1 ,2"},
        /* by-parts the frequency does not allow (RFC 5545 §3.3.10) */
        {"byweekno", "1"}, {"byyearday", "1"},
    };
    for (apr_size_t i = 0; i < sizeof(bad_lists) / sizeof(bad_lists[0]); i++)
        ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "freq", "monthly",
                      bad_lists[i][0], bad_lists[i][1], NULL);
    /* long lists stay within libical's arrays */
    char *many = apr_pstrdup(pool, "0");
    for (int i = 0; i < 100; i++)
        many = apr_pstrcat(pool, many, ",1", NULL);
    ctime_refused(NULL, "dtstart", d, "duration", "PT1H", "freq", "daily", "byhour", many, NULL);
    /* tzurl is never fetched: any value is fine next to a known tzid */
    const char *attrs[] = {"dtstart", d, "duration", "PT1H", NULL};
    ck_assert_ptr_nonnull(sip_cpl_time_compile(pool, "UTC", "http://127.0.0.1:1/", attrs,
                                               NULL));
}
END_TEST

static Suite *cpl_time_suite(void)
{
    Suite *s = suite_create("cpl_time");
    TCase *tc = tcase_create("time");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, ctime_business_hours);
    tcase_add_test(tc, ctime_last_friday);
    tcase_add_test(tc, ctime_yearly);
    tcase_add_test(tc, ctime_count_until);
    tcase_add_test(tc, ctime_dst);
    tcase_add_test(tc, ctime_floating);
    tcase_add_test(tc, ctime_by_parts);
    tcase_add_test(tc, ctime_subdaily_phase);
    tcase_add_test(tc, ctime_against_iteration);
    tcase_add_test(tc, ctime_against_glibc);
    tcase_add_test(tc, ctime_hostile);
    tcase_add_test(tc, ctime_refusals);
    suite_add_tcase(s, tc);
    return s;
}

/* ------------------------------------------------------------------ */
/* sip_cpl_mail: mailto: URLs (RFC 6068) into RFC 5322 messages         */

static const char *cmail(const char *url, const char *info)
{
    const char *why = NULL;
    const char *m = sip_cpl_mail_message(pool, url, "cpl@sip.example.org", info, &why);
    ck_assert_msg(m != NULL, "%s refused: %s", url, why ? why : "(no reason)");
    /* CRLF only, headers then one empty line */
    for (const char *c = m; *c; c++) {
        if (*c == '\n')
            ck_assert_msg(c > m && c[-1] == '\r', "bare LF in %s", m);
        if (*c == '\r')
            ck_assert_msg(c[1] == '\n', "bare CR in %s", m);
    }
    ck_assert_ptr_nonnull(strstr(m, "\r\n\r\n"));
    ck_assert_int_eq(strncmp(m, "From: cpl@sip.example.org\r\n", 27), 0);
    return m;
}

/* The header part of a message (up to its empty line). */
static const char *cmail_head(const char *m)
{
    return apr_pstrmemdup(pool, m, strstr(m, "\r\n\r\n") + 2 - m);
}

static const char *cmail_refused(const char *url)
{
    const char *why = NULL;
    const char *m = sip_cpl_mail_message(pool, url, "cpl@sip.example.org", NULL, &why);
    ck_assert_msg(m == NULL, "%s accepted:\n%s", url, m ? m : "");
    ck_assert_ptr_nonnull(why);
    for (const char *c = why; *c; c++)
        ck_assert(*c >= 0x20 && *c < 0x7f);
    return why;
}

START_TEST(cmail_valid)
{
    const char *m = cmail("mailto:alice@example.com", "Call from sip:bob@example.org");
    const char *h = cmail_head(m);
    ck_assert_ptr_nonnull(strstr(h, "\r\nTo: alice@example.com\r\n"));
    ck_assert_ptr_nonnull(strstr(h, "\r\nSubject: Call notification\r\n"));
    ck_assert_ptr_nonnull(strstr(h, "\r\nDate: "));
    ck_assert_ptr_nonnull(strstr(h, "\r\nContent-Type: text/plain; charset=UTF-8\r\n"));
    ck_assert_str_eq(strstr(m, "\r\n\r\n"), "\r\n\r\nCall from sip:bob@example.org\r\n");
    /* RFC 3880 §7.1's example form, scheme and names in any case */
    m = cmail("MAILTO:jones@example.com?Subject=lookup%20failed", NULL);
    ck_assert_ptr_nonnull(strstr(m, "\r\nSubject: lookup failed\r\n"));
    ck_assert_str_eq(strstr(m, "\r\n\r\n"), "\r\n\r\n");
    /* the safe headers */
    m = cmail("mailto:a@example.com?in-reply-to=%3C1234%40example.com%3E&keywords=cpl"
              "&comments=from%20mod_sip", NULL);
    h = cmail_head(m);
    ck_assert_ptr_nonnull(strstr(h, "\r\nIn-Reply-To: <1234@example.com>\r\n"));
    ck_assert_ptr_nonnull(strstr(h, "\r\nKeywords: cpl\r\n"));
    ck_assert_ptr_nonnull(strstr(h, "\r\nComments: from mod_sip\r\n"));
}
END_TEST

START_TEST(cmail_recipients)
{
    const char *m = cmail("mailto:a@x.example,b@y.example?cc=c@z.example&to=d@w.example", NULL);
    const char *h = cmail_head(m);
    ck_assert_ptr_nonnull(strstr(h, "\r\nTo: a@x.example, b@y.example, d@w.example\r\n"));
    ck_assert_ptr_nonnull(strstr(h, "\r\nCc: c@z.example\r\n"));
    /* RFC 6068 §2: recipients may all be in hfields */
    m = cmail("mailto:?to=a@x.example", NULL);
    ck_assert_ptr_nonnull(strstr(m, "\r\nTo: a@x.example\r\n"));
    /* 16 at most */
    const char *url = "mailto:u0@example.com";
    for (int i = 1; i < 16; i++)
        url = apr_psprintf(pool, "%s,u%d@example.com", url, i);
    cmail(url, NULL);
    cmail_refused(apr_pstrcat(pool, url, ",u16@example.com", NULL));
    cmail_refused(apr_pstrcat(pool, url, "?cc=u16@example.com", NULL));
}
END_TEST

START_TEST(cmail_escapes)
{
    const char *m = cmail("mailto:alice%40example.com?subject=Missed%20call%20from%20a+b"
                          "&body=line1%0D%0Aline2%0Aline3%0D", "info\nmore");
    ck_assert_ptr_nonnull(strstr(m, "\r\nTo: alice@example.com\r\n"));
    ck_assert_ptr_nonnull(strstr(m, "\r\nSubject: Missed call from a+b\r\n"));  /* §5: '+' */
    ck_assert_str_eq(strstr(m, "\r\n\r\n"), "\r\n\r\nline1\r\nline2\r\nline3\r\n\r\ninfo\r\nmore\r\n");
    /* UTF-8 in the body is fine (8bit) */
    m = cmail("mailto:a@example.com?body=caf%C3%A9", NULL);
    ck_assert_ptr_nonnull(strstr(m, "\r\n\r\ncaf\xc3\xa9\r\n"));
    /* control characters in the body or the call info become '?' */
    m = cmail("mailto:a@example.com?body=a%07b", "x\001y");
    ck_assert_ptr_nonnull(strstr(m, "\r\n\r\na?b\r\n\r\nx?y\r\n"));
}
END_TEST

START_TEST(cmail_injections)
{
    static const char *const bad[] = {
        /* line breaks into headers */
        "mailto:a@example.com?subject=hi%0D%0ABcc:%20evil@example.net",
        "mailto:a@example.com?subject=hi%0ABcc:%20evil@example.net",
        "mailto:a@example.com?subject=hi%0D",
        "mailto:a@example.com%0D%0ABcc:%20evil@example.net",
        "mailto:a@example.com?cc=b@example.com%0A%0Ahello",
        "mailto:a@example.com?in-reply-to=%3Cx%3E%0D%0AX-Evil:%201",
        /* headers outside the safe list */
        "mailto:a@example.com?bcc=evil@example.net",
        "mailto:a@example.com?BCC=evil@example.net",
        "mailto:a@example.com?from=boss@example.com",
        "mailto:a@example.com?reply-to=evil@example.net",
        "mailto:a@example.com?x-mailer=evil",
        "mailto:a@example.com?content-type=text/html",
        "mailto:a@example.com?b%63c=evil@example.net",
        /* bad escapes */
        "mailto:a@example.com?subject=%zz", "mailto:a@example.com?subject=%4",
        "mailto:a@example.com?subject=100%", "mailto:a@example.com?subject=a%00b",
        "mailto:a%4@example.com",
        /* not a mailto:, no recipient, bad addresses */
        "http://example.com/", "mailto:", "mailto:?subject=x", "sip:a@example.com",
        "mailto:a@b@example.com", "mailto:@example.com", "mailto:a@", "mailto:a%20b@example.com",
        "mailto:%3Ca@example.com%3E", "mailto:%22q%22@example.com", "mailto:a..b@example.com",
        "mailto:a@example..com", "mailto:a@-example.com", "mailto:.a@example.com",
        "mailto:a@example.com,", "mailto:a@example.com?to=", "mailto:a@exam_ple.com",
        /* shapes */
        "mailto:a@example.com?subject", "mailto:a@example.com?subject=a&subject=b",
        "mailto:a@example.com?body=a&body=b", "mailto:a@example.com#frag",
        "mailto:a@example.com?subject=caf%C3%A9",      /* 8-bit in a header */
        "mailto:a@example.com?subject=tab%09ok%7F",
    };
    for (apr_size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cmail_refused(bad[i]);
    ck_assert_ptr_nonnull(strstr(cmail_refused("mailto:a@example.com?bcc=e@example.net"),
                                 "not allowed"));
    /* a tab is a blank, allowed */
    cmail("mailto:a@example.com?subject=tab%09ok", NULL);
    /* the sender is checked too */
    const char *why = NULL;
    ck_assert_ptr_null(sip_cpl_mail_message(pool, "mailto:a@example.com",
                                            "x@example.com\r\nBcc: e@example.net", NULL, &why));
    ck_assert_ptr_null(sip_cpl_mail_message(pool, "mailto:a@example.com", NULL, NULL, &why));
    /* call info with line breaks stays in the body */
    const char *m = cmail("mailto:a@example.com", "From: \"x\r\nBcc: e@example.net\"");
    ck_assert_ptr_null(strstr(cmail_head(m), "Bcc"));
    /* too long */
    char *big = apr_palloc(pool, 10000);
    memset(big, 'a', 9999);
    big[9999] = '\0';
    cmail_refused(apr_pstrcat(pool, "mailto:a@example.com?subject=", big, NULL));
    cmail_refused(apr_pstrcat(pool, "mailto:a@example.com?subject=", big + 9000, NULL));
}
END_TEST

/* sip_cpl_mail_send on a real loop: the stop timer ends it once no mail
 * process is left (or after 'limit'). */
static volatile sig_atomic_t cmail_stop;
static sip_timer_t cmail_timer;
static sip_loop_t *cmail_loop;
static apr_time_t cmail_limit;

static void cmail_check(void *baton)
{
    (void)baton;
    if (!sip_cpl_mail_running() || apr_time_now() > cmail_limit)
        cmail_stop = 1;
    else
        sip_timer_set(cmail_loop, &cmail_timer, apr_time_from_msec(10), cmail_check, NULL);
}

static void cmail_run_loop(int seconds)
{
    cmail_stop = 0;
    cmail_limit = apr_time_now() + apr_time_from_sec(seconds);
    sip_timer_set(cmail_loop, &cmail_timer, apr_time_from_msec(10), cmail_check, NULL);
    sip_loop_run(cmail_loop, &cmail_stop);
}

static void cmail_no_children(void)
{
    int status;
    errno = 0;
    ck_assert_int_eq(waitpid(-1, &status, WNOHANG), -1);   /* no zombie, nothing running */
    ck_assert_int_eq(errno, ECHILD);
}

START_TEST(cmail_send)
{
    apr_pool_t *mp;
    char path[] = "/tmp/cpl-mail-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    signal(SIGPIPE, SIG_IGN);                  /* as the engine does */
    ck_assert_int_eq(sip_loop_create(&cmail_loop, pool), APR_SUCCESS);
    ck_assert_int_eq(apr_pool_create(&mp, pool), APR_SUCCESS);
    sip_cpl_mail_init(cmail_loop, mp);

    /* a message larger than a pipe: written as the pipe takes it */
    const char *msg = sip_cpl_mail_message(pool, "mailto:a@example.com?subject=big", "cpl@x.org",
                                           NULL, NULL);
    char *body = apr_palloc(pool, 300001);
    for (int i = 0; i < 300000; i++)
        body[i] = i % 80 == 79 ? '\n' : 'a' + i % 26;
    body[300000] = '\0';
    msg = apr_pstrcat(pool, msg, body, NULL);
    const char *cmd = apr_pstrcat(pool, "/bin/sh  -c \tcat>", path, NULL);
    ck_assert_int_eq(sip_cpl_mail_send(cmd, msg, NULL), APR_SUCCESS);
    ck_assert_uint_eq(sip_cpl_mail_running(), 1);
    cmail_run_loop(10);
    ck_assert_uint_eq(sip_cpl_mail_running(), 0);
    cmail_no_children();
    apr_file_t *f;
    apr_finfo_t fi;
    ck_assert_int_eq(apr_stat(&fi, path, APR_FINFO_SIZE, pool), APR_SUCCESS);
    ck_assert_int_eq(fi.size, (apr_off_t)strlen(msg));
    ck_assert_int_eq(apr_file_open(&f, path, APR_READ, 0, pool), APR_SUCCESS);
    char *got = apr_palloc(pool, strlen(msg) + 1);
    apr_size_t n = strlen(msg);
    ck_assert_int_eq(apr_file_read_full(f, got, n, &n), APR_SUCCESS);
    ck_assert_int_eq(memcmp(got, msg, n), 0);
    apr_file_close(f);

    /* failures: exit status, a command that does not read, a missing one,
     * a relative one */
    ck_assert_int_eq(sip_cpl_mail_send("/bin/false", "x\r\n", NULL), APR_SUCCESS);
    ck_assert_int_eq(sip_cpl_mail_send("/bin/true", msg, NULL), APR_SUCCESS);
    ck_assert_int_ne(sip_cpl_mail_send("/nonexistent/sendmail -t", "x", NULL), APR_SUCCESS);
    ck_assert_int_eq(sip_cpl_mail_send("sendmail -t", "x", NULL), APR_EINVAL);
    ck_assert_int_eq(sip_cpl_mail_send("   ", "x", NULL), APR_EINVAL);
    ck_assert_uint_eq(sip_cpl_mail_running(), 2);
    cmail_run_loop(10);
    ck_assert_uint_eq(sip_cpl_mail_running(), 0);
    cmail_no_children();

    /* a failure's log line has its exit status and what it said on stderr
     * (the test stubs log to stderr: caught in a file here) */
    char logpath[] = "/tmp/cpl-mail-log-XXXXXX";
    int logfd = mkstemp(logpath), saved = dup(2);
    ck_assert_int_ge(logfd, 0);
    dup2(logfd, 2);
    ck_assert_int_eq(sip_cpl_mail_send("/bin/sh -c echo${IFS}no${IFS}such${IFS}user>&2;exit${IFS}67",
                                       "x", NULL), APR_SUCCESS);
    cmail_run_loop(10);
    dup2(saved, 2);
    close(saved);
    char logbuf[1024] = "";
    ck_assert_int_gt(pread(logfd, logbuf, sizeof(logbuf) - 1, 0), 0);
    close(logfd);
    unlink(logpath);
    ck_assert_msg(strstr(logbuf, "/bin/sh exited with status 67: no such user\n"), "%s", logbuf);
    cmail_no_children();

    /* a megabyte on stderr is drained, not left to fill the pipe and stall it */
    apr_time_t t1 = apr_time_now();
    ck_assert_int_eq(sip_cpl_mail_send("/bin/sh -c yes|head${IFS}-c${IFS}1000000>&2;exit${IFS}1",
                                       "x", NULL), APR_SUCCESS);
    cmail_run_loop(10);
    ck_assert_uint_eq(sip_cpl_mail_running(), 0);
    ck_assert_int_lt(apr_time_now() - t1, apr_time_from_sec(5));
    cmail_no_children();

    /* one that hangs is killed after the timeout, its group with it */
    mail_timeout = apr_time_from_msec(200);
    apr_time_t t0 = apr_time_now();
    ck_assert_int_eq(sip_cpl_mail_send("/bin/sh -c sleep${IFS}30;sleep${IFS}30", "x", NULL),
                     APR_SUCCESS);
    cmail_run_loop(10);
    ck_assert_uint_eq(sip_cpl_mail_running(), 0);
    ck_assert_int_lt(apr_time_now() - t0, apr_time_from_sec(3));
    cmail_no_children();

    /* at most 8 at once; the engine's pool going kills and reaps them */
    mail_timeout = SIP_CPL_MAIL_TIMEOUT;
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(sip_cpl_mail_send("/bin/sleep 30", "x", NULL), APR_SUCCESS);
    ck_assert_int_eq(sip_cpl_mail_send("/bin/sleep 30", "x", NULL), APR_EAGAIN);
    ck_assert_uint_eq(sip_cpl_mail_running(), 8);
    apr_pool_destroy(mp);
    ck_assert_uint_eq(sip_cpl_mail_running(), 0);
    cmail_no_children();
    unlink(path);
    free(cmail_loop->heap);     /* as the timer tests do: the loop has no destructor */
}
END_TEST

static Suite *cpl_mail_suite(void)
{
    Suite *s = suite_create("cpl_mail");
    TCase *tc = tcase_create("mail");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, cmail_valid);
    tcase_add_test(tc, cmail_recipients);
    tcase_add_test(tc, cmail_escapes);
    tcase_add_test(tc, cmail_injections);
    tcase_add_test(tc, cmail_send);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* URI-list requests: sip_explode (EXPLODE draft, RFC 5365 MESSAGE)    */

#define XB "xbound"

/* A request with 'ruri', extra headers and a body, Content-Length right. */
static sip_msg_t *xp_request(const char *method, const char *ruri, const char *hdrs,
                             const char *ctype, const char *body)
{
    const char *text = apr_psprintf(pool,
        "%s %s SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKx1\r\n"
        "Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@client.example.org>;tag=a1;x=y\r\n"
        "To: <sip:exploder@example.org>\r\nCall-ID: c1@client\r\nCSeq: 1 %s\r\n%s"
        "Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
        method, ruri, method, hdrs, ctype, (int)strlen(body), body);
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    ck_assert_int_eq(sip_msg_parse(pool, text, strlen(text), NULL, 0, &m, &err), APR_SUCCESS);
    return m;
}

static const char *xp_list(const char *entries)
{
    return apr_pstrcat(pool, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
                       "<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\""
                       " xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\"><list>",
                       entries, "</list></resource-lists>", NULL);
}

static const char *xp_template(const char *method, const char *extra)
{
    return apr_pstrcat(pool, method, " sip:anyone.invalid SIP/2.0\r\n", extra,
                       "Content-Type: text/plain\r\nContent-Length: 7\r\n\r\nHi all.", NULL);
}

/* multipart/mixed of template and list parts, in the order asked */
static const char *xp_body(const char *tpl, const char *list, const char *list_hdrs, int list_first)
{
    const char *t = apr_pstrcat(pool, "--" XB "\r\nContent-Type: message/sipfrag\r\n"
                                "Content-Disposition: template\r\n\r\n", tpl, "\r\n", NULL);
    const char *l = apr_pstrcat(pool, "--" XB "\r\n", list_hdrs, "\r\n", list, "\r\n", NULL);
    return apr_pstrcat(pool, list_first ? l : t, list_first ? t : l, "--" XB "--\r\n", NULL);
}

#define LISTHDR "Content-Type: application/resource-lists+xml\r\nContent-ID: <lst1@client.example.org>\r\n"
#define FOUR "<entry uri=\"sip:bill@example.org\"/><entry uri=\"sip:joe@example.org\"/>" \
             "<entry uri=\"sip:ted@example.org\"/><entry uri=\"sip:bob@example.org\"/>"

static int xp_parse(sip_msg_t *m, const char *realm, sip_explode_job_t **job, const char **reason)
{
    sip_explode_limits_t lim = {100, NULL, realm};
    const char *why = NULL, *accept = NULL;
    return sip_explode_parse(pool, m, &lim, job, reason, &why, &accept);
}

static sip_explode_job_t *xp_job(sip_msg_t *m)
{
    sip_explode_job_t *job = NULL;
    const char *reason = NULL;
    int rc = xp_parse(m, "example.org", &job, &reason);
    ck_assert_msg(rc == 0, "parse refused: %d %s", rc, reason ? reason : "");
    return job;
}

static sip_msg_t *xp_out(sip_explode_job_t *job, int i, const char *ruri)
{
    apr_size_t len = 0;
    const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(job->targets, i, sip_uri_list_entry_t);
    const char *t = sip_explode_request(pool, job, e, ruri, apr_psprintf(pool, "cid%d@x", i),
                                        "newtag", &len);
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(strlen(t), len);
    /* Via is the sender's: add one to parse it as a received request */
    {
        const char *nl = strstr(t, "\r\n") + 2;
        const char *full = apr_pstrcat(pool, apr_pstrmemdup(pool, t, (apr_size_t)(nl - t)),
                                       "Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKo\r\n", nl, NULL);
        ck_assert_int_eq(sip_msg_parse(pool, full, strlen(full), NULL, 0, &m, &err), APR_SUCCESS);
    }
    return m;
}

START_TEST(test_explode_x1)
{
    static const char *const who[] = {"bill", "joe", "ted", "bob"};
    sip_msg_t *req = xp_request("EXPLODE", "sip:exploder@example.org;list=cid:lst1%40client.example.org",
                                "", "multipart/mixed;boundary=" XB,
                                xp_body(xp_template("MESSAGE", ""), xp_list(FOUR), LISTHDR, 0));
    sip_explode_job_t *job;
    apr_size_t blen;
    int i;

    ck_assert_int_eq(sip_explode_kind(pool, req), SIP_EXPLODE_DRAFT);
    job = xp_job(req);
    ck_assert_str_eq(job->method, "MESSAGE");
    ck_assert_int_eq(job->targets->nelts, 4);
    ck_assert_int_eq(job->dropped->nelts, 0);
    for (i = 0; i < 4; i++) {
        sip_msg_t *o = xp_out(job, i, NULL);
        const char *uri = apr_psprintf(pool, "sip:%s@example.org", who[i]);
        const char *b = sip_msg_body(o, &blen);
        ck_assert_str_eq(sip_msg_method(o), "MESSAGE");
        ck_assert_str_eq(sip_msg_request_uri(o), uri);
        ck_assert_str_eq(sip_msg_header(o, "From"),
                         "\"Alice\" <sip:alice@client.example.org>;x=y;tag=newtag");
        ck_assert_str_eq(sip_msg_header(o, "To"), apr_pstrcat(pool, "<", uri, ">", NULL));
        ck_assert_str_eq(sip_msg_call_id(o), apr_psprintf(pool, "cid%d@x", i));
        ck_assert_str_eq(sip_msg_header(o, "CSeq"), "1 MESSAGE");
        ck_assert_str_eq(sip_msg_header(o, "Max-Forwards"), "70");
        ck_assert_str_eq(sip_msg_header(o, "Content-Type"), "text/plain");
        ck_assert_str_eq(sip_msg_header(o, "Content-Length"), "7");
        ck_assert_uint_eq(blen, 7);
        ck_assert(memcmp(b, "Hi all.", 7) == 0);
        ck_assert_ptr_null(sip_msg_header(o, "Require"));
    }
    /* a registered contact replaces the Request-URI only */
    {
        sip_msg_t *o = xp_out(job, 0, "sip:bill@192.0.2.9:5070;transport=tcp");
        ck_assert_str_eq(sip_msg_request_uri(o), "sip:bill@192.0.2.9:5070;transport=tcp");
        ck_assert_str_eq(sip_msg_header(o, "To"), "<sip:bill@example.org>");
    }
}
END_TEST

/* X2, X3, EX-20: overrides, dangerous ones ignored, §19.1.5 parameters */
START_TEST(test_explode_overrides)
{
    const char *list = xp_list(
        "<entry uri=\"sip:bill@example.org\"/>"
        "<entry uri=\"sip:joe@example.org?Subject=Urgent\"/>"
        "<entry uri=\"sip:ted@example.org;transport=tcp;foo=bar;method=INVITE?From=sip%3Amallory%40evil.example&amp;Route=%3Csip%3Aevil.example%3E&amp;Subject=x%0D%0AEvil:%20y&amp;Via=SIP/2.0/UDP%20evil&amp;body=spam\"/>");
    sip_msg_t *req = xp_request("EXPLODE", "sip:exploder@example.org;list=cid:lst1@client.example.org",
                                "", "multipart/mixed;boundary=" XB,
                                xp_body(xp_template("MESSAGE", "Subject: Weekly\r\nRoute: <sip:evil>\r\nVia: SIP/2.0/UDP evil\r\nFrom: <sip:mallory@evil>\r\n"),
                                        list, LISTHDR, 1));
    sip_explode_job_t *job = xp_job(req);
    sip_msg_t *bill, *joe, *ted;
    apr_size_t blen;

    ck_assert_int_eq(job->targets->nelts, 3);
    bill = xp_out(job, 0, NULL);
    joe = xp_out(job, 1, NULL);
    ted = xp_out(job, 2, NULL);
    ck_assert_str_eq(sip_msg_header(bill, "Subject"), "Weekly");
    ck_assert_str_eq(sip_msg_header(joe, "Subject"), "Urgent");
    ck_assert_str_eq(sip_msg_header(ted, "Subject"), "Weekly");
    ck_assert_ptr_null(sip_msg_header(ted, "Evil"));
    ck_assert_ptr_null(sip_msg_header(ted, "Route"));
    ck_assert_ptr_null(sip_msg_header(bill, "Route"));
    ck_assert_int_eq(sip_msg_via_count(ted), 1);
    ck_assert_str_eq(sip_msg_header(ted, "From"),
                     "\"Alice\" <sip:alice@client.example.org>;x=y;tag=newtag");
    ck_assert_str_eq(sip_msg_method(ted), "MESSAGE");
    ck_assert_str_eq(sip_msg_request_uri(ted), "sip:ted@example.org;transport=tcp;foo=bar");
    ck_assert_str_eq(sip_msg_header(ted, "To"), "<sip:ted@example.org;transport=tcp;foo=bar>");
    sip_msg_body(ted, &blen);
    ck_assert_uint_eq(blen, 7);
}
END_TEST

/* X4, X7, EX-13/X10: one target, duplicates, recursion */
START_TEST(test_explode_dups_recursion)
{
    const char *list = xp_list("<entry uri=\"sip:bob@example.org\"/><entry uri=\"sip:bob@EXAMPLE.ORG\"/>"
                               "<entry uri=\"sip:exploder@example.org;list=cid:x%40y\"/>"
                               "<entry uri=\"sip:Exploder@example.org\"/>"
                               "<entry uri=\"sips:exploder@Example.org:5061\"/>"
                               "<entry uri=\"sip:EXAMPLE.org:5070\"/>"
                               "<entry uri=\"sip:other.example.org\"/>");
    sip_msg_t *req = xp_request("EXPLODE", "sips:exploder@example.org;list=cid:lst1@client.example.org",
                                "", "multipart/mixed;boundary=" XB,
                                xp_body(xp_template("MESSAGE", ""), list, LISTHDR, 0));
    sip_explode_job_t *job = xp_job(req);
    const char *reason = NULL;

    /* bob once, Exploder (user case differs), another host; the server's
     * own host with no user is dropped like the exploder */
    ck_assert_int_eq(job->targets->nelts, 3);
    ck_assert_str_eq(APR_ARRAY_IDX(job->targets, 0, sip_uri_list_entry_t).uri, "sip:bob@example.org");
    ck_assert_str_eq(APR_ARRAY_IDX(job->targets, 2, sip_uri_list_entry_t).uri, "sip:other.example.org");
    ck_assert_int_eq(job->dropped->nelts, 3);
    ck_assert_str_eq(APR_ARRAY_IDX(job->dropped, 2, const char *), "sip:EXAMPLE.org:5070");
    /* template method EXPLODE or REGISTER: 403 */
    req = xp_request("EXPLODE", "sip:exploder@example.org;list=cid:lst1@client.example.org", "",
                     "multipart/mixed;boundary=" XB,
                     xp_body(xp_template("EXPLODE", ""), xp_list(FOUR), LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 403);
    req = xp_request("EXPLODE", "sip:exploder@example.org;list=cid:lst1@client.example.org", "",
                     "multipart/mixed;boundary=" XB,
                     xp_body(xp_template("INVITE", ""), xp_list(FOUR), LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 403);
    /* only recursion left: 400 */
    req = xp_request("EXPLODE", "sip:exploder@example.org;list=cid:lst1@client.example.org", "",
                     "multipart/mixed;boundary=" XB,
                     xp_body(xp_template("MESSAGE", ""),
                             xp_list("<entry uri=\"sip:exploder@example.org\"/>"), LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
}
END_TEST

/* X9 and the other refusals */
START_TEST(test_explode_refusals)
{
    const char *tpl = xp_template("MESSAGE", ""), *list = xp_list(FOUR), *reason = NULL;
    const char *ruri = "sip:exploder@example.org;list=cid:lst1@client.example.org";
    sip_explode_job_t *job;
    sip_msg_t *req;

    /* (a) no such Content-ID */
    req = xp_request("EXPLODE", "sip:exploder@example.org;list=cid:nope@x", "",
                     "multipart/mixed;boundary=" XB, xp_body(tpl, list, LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    ck_assert_ptr_null(job);
    /* (b) no template */
    req = xp_request("EXPLODE", ruri, "", "multipart/mixed;boundary=" XB,
                     apr_pstrcat(pool, "--" XB "\r\n" LISTHDR "\r\n", list, "\r\n--" XB "--\r\n", NULL));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    /* (c) the list is text/plain */
    req = xp_request("EXPLODE", ruri, "", "multipart/mixed;boundary=" XB,
                     xp_body(tpl, list, "Content-Type: text/plain\r\nContent-ID: <lst1@client.example.org>\r\n", 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 415);
    /* external list */
    req = xp_request("EXPLODE", "sip:exploder@example.org;list=http://xcap.example.com/l.xml", "",
                     "multipart/mixed;boundary=" XB, xp_body(tpl, list, LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 403);
    ck_assert_str_eq(reason, "External lists not allowed");
    /* malformed XML, malformed sipfrag, a status line */
    req = xp_request("EXPLODE", ruri, "", "multipart/mixed;boundary=" XB,
                     xp_body(tpl, "<resource-lists><list>", LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    req = xp_request("EXPLODE", ruri, "", "multipart/mixed;boundary=" XB,
                     xp_body("Subject: no request line\r\n\r\n", list, LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    req = xp_request("EXPLODE", ruri, "", "multipart/mixed;boundary=" XB,
                     xp_body("SIP/2.0 200 OK\r\n\r\n", list, LISTHDR, 0));
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    /* too many */
    {
        sip_explode_limits_t lim = {3, NULL, NULL};
        const char *why, *accept;
        req = xp_request("EXPLODE", ruri, "", "multipart/mixed;boundary=" XB, xp_body(tpl, list, LISTHDR, 0));
        ck_assert_int_eq(sip_explode_parse(pool, req, &lim, &job, &reason, &why, &accept), 403);
        ck_assert_str_eq(reason, "Too Many Recipients");
    }
}
END_TEST

/* EX-2, EX-3, EX-4, EX-5: list= raw and escaped, sips:, order, compact
 * headers, the fragment's Content-Length, top-level Content-ID, several
 * recipient-list parts */
START_TEST(test_explode_forms)
{
    const char *list = xp_list(FOUR), *reason = NULL;
    const char *tpl = "MESSAGE sip:anyone.invalid SIP/2.0\r\ns: Compact\r\nc: text/plain\r\n"
                      "l: 3\r\n\r\nabcdef";
    static const char *const ruris[] = {
        "sip:exploder@example.org;list=cid:lst1@client.example.org",
        "sip:exploder@example.org;list=cid:lst1%40client.example.org",
        "sips:exploder@example.org;list=cid:lst1@client.example.org",
        "sip:example.org;list=cid:lst1@client.example.org", NULL
    };
    sip_explode_job_t *job;
    sip_msg_t *req, *o;
    apr_size_t blen;
    int i;

    for (i = 0; ruris[i]; i++) {
        req = xp_request("EXPLODE", ruris[i], "", "multipart/mixed;boundary=" XB,
                         xp_body(tpl, list, LISTHDR, i % 2));
        job = xp_job(req);
        ck_assert_int_eq(job->targets->nelts, 4);
        o = xp_out(job, 1, NULL);
        ck_assert_str_eq(sip_msg_header(o, "Subject"), "Compact");
        ck_assert_str_eq(sip_msg_header(o, "Content-Type"), "text/plain");
        ck_assert(memcmp(sip_msg_body(o, &blen), "abc", 3) == 0);
        ck_assert_uint_eq(blen, 3);
    }
    /* the whole body is the list (top-level Content-ID): found, then no template */
    req = xp_request("EXPLODE", ruris[0], "Content-ID: <lst1@client.example.org>\r\n",
                     "application/resource-lists+xml", list);
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    ck_assert_str_eq(reason, "Missing Template");
    req = xp_request("EXPLODE", ruris[0], "", "application/resource-lists+xml", list);
    ck_assert_int_eq(xp_parse(req, NULL, &job, &reason), 400);
    ck_assert_str_eq(reason, "Missing or unresolvable list");
    /* no list=: the recipient-list parts, two of them forming one list */
    req = xp_request("EXPLODE", "sip:exploder@example.org", "", "multipart/mixed;boundary=" XB,
                     apr_pstrcat(pool, "--" XB "\r\nContent-Type: application/resource-lists+xml\r\n"
                                 "Content-Disposition: recipient-list\r\n\r\n",
                                 xp_list("<entry uri=\"sip:a@example.org\"/>"), "\r\n",
                                 xp_body(tpl, xp_list("<entry uri=\"sip:b@example.org\"/>"),
                                         "Content-Type: application/resource-lists+xml\r\n"
                                         "Content-Disposition: recipient-list\r\n", 1), NULL));
    job = xp_job(req);
    ck_assert_int_eq(job->targets->nelts, 2);
}
END_TEST

/* X11: RFC 5365 with copyControl and history; EX-22 credentials */
START_TEST(test_explode_message)
{
    const char *list = xp_list(
        "<entry uri=\"sip:bill@example.com\" cp:copyControl=\"to\"/>"
        "<entry uri=\"sip:randy@example.net\" cp:copyControl=\"to\" cp:anonymize=\"true\"/>"
        "<entry uri=\"sip:eddy@example.com\" cp:copyControl=\"to\"/>"
        "<entry uri=\"sip:joe@example.org\" cp:copyControl=\"cc\"/>"
        "<entry uri=\"sip:carol@example.net\" cp:copyControl=\"bcc\"/>");
    const char *body = apr_pstrcat(pool, "--" XB "\r\nContent-Type: text/plain\r\n\r\nHello world\r\n"
                                   "--" XB "\r\nContent-Type: application/resource-lists+xml\r\n"
                                   "Content-Disposition: recipient-list\r\n\r\n", list,
                                   "\r\n--" XB "--\r\n", NULL);
    const char *hdrs = "Require: 100rel, Recipient-List-Message\r\nSubject: hi\r\n"
                       "Authorization: Digest username=\"alice\", realm=\"example.org\", nonce=\"n\", uri=\"sip:x\", response=\"r\"\r\n"
                       "Proxy-Authorization: Digest username=\"alice\", realm=\"other.net\", nonce=\"n\", uri=\"sip:x\", response=\"r\"\r\n";
    sip_msg_t *req = xp_request("MESSAGE", "sip:list-service.example.org", hdrs,
                                "multipart/mixed;boundary=" XB, body), *o;
    sip_explode_job_t *job;
    const char *type, *boundary, *why;
    apr_array_header_t *parts;
    apr_size_t blen;
    const char *b;

    ck_assert_int_eq(sip_explode_kind(pool, req), SIP_EXPLODE_MESSAGE);
    job = xp_job(req);
    ck_assert_int_eq(job->targets->nelts, 5);
    o = xp_out(job, 3, NULL);
    ck_assert_str_eq(sip_msg_method(o), "MESSAGE");
    ck_assert_str_eq(sip_msg_header(o, "Subject"), "hi");
    ck_assert_ptr_null(sip_msg_header(o, "Require"));
    ck_assert_ptr_null(sip_msg_header(o, "Authorization"));
    ck_assert_ptr_nonnull(strstr(sip_msg_header(o, "Proxy-Authorization"), "other.net"));
    ck_assert_int_eq(sip_mime_content_type(pool, sip_msg_header(o, "Content-Type"), &type, &boundary), 0);
    ck_assert_str_eq(type, "multipart/mixed");
    b = sip_msg_body(o, &blen);
    ck_assert_int_eq(sip_mime_multipart_split(pool, b, blen, boundary, &parts, &why), 0);
    ck_assert_int_eq(parts->nelts, 2);
    ck_assert(memcmp(APR_ARRAY_IDX(parts, 0, sip_mime_part_t).body, "Hello world", 11) == 0);
    {
        const sip_mime_part_t *h = &APR_ARRAY_IDX(parts, 1, sip_mime_part_t);
        const char *x = apr_pstrmemdup(pool, h->body, h->len);
        ck_assert_str_eq(sip_mime_part_header(h, "Content-Disposition"),
                         "recipient-list-history; handling=optional");
        ck_assert_ptr_nonnull(strstr(x, "sip:bill@example.com"));
        ck_assert_ptr_nonnull(strstr(x, "sip:joe@example.org"));
        ck_assert_ptr_nonnull(strstr(x, "anonymous@anonymous.invalid"));
        ck_assert_ptr_null(strstr(x, "randy"));
        ck_assert_ptr_null(strstr(x, "carol"));
    }
    /* EX-23: bcc only, so no history: the text goes unwrapped */
    body = apr_pstrcat(pool, "--" XB "\r\nContent-Type: text/plain\r\n\r\nHello world\r\n"
                       "--" XB "\r\nContent-Type: application/resource-lists+xml\r\n"
                       "Content-Disposition: recipient-list\r\n\r\n",
                       xp_list("<entry uri=\"sip:carol@example.net\"/>"), "\r\n--" XB "--\r\n", NULL);
    req = xp_request("MESSAGE", "sip:list-service.example.org", hdrs, "multipart/mixed;boundary=" XB, body);
    job = xp_job(req);
    o = xp_out(job, 0, NULL);
    ck_assert_str_eq(sip_msg_header(o, "Content-Type"), "text/plain");
    b = sip_msg_body(o, &blen);
    ck_assert_uint_eq(blen, 11);
    ck_assert(memcmp(b, "Hello world", 11) == 0);
    /* without the option tag it is no URI-list request */
    req = xp_request("MESSAGE", "sip:list-service.example.org", "Require: 100rel\r\n",
                     "multipart/mixed;boundary=" XB, body);
    ck_assert_int_eq(sip_explode_kind(pool, req), SIP_EXPLODE_NONE);
}
END_TEST

START_TEST(test_explode_uri_helpers)
{
    apr_array_header_t *h;
    const char *bare;

    ck_assert_str_eq(sip_uri_param(pool, "sip:e@x.org;list=cid:a@b.org", "list"), "cid:a@b.org");
    ck_assert_str_eq(sip_uri_param(pool, "sips:x.org;list=cid:a@b.org", "list"), "cid:a@b.org");
    ck_assert_str_eq(sip_uri_param(pool, "sip:e@x.org;lr", "lr"), "");
    ck_assert_ptr_null(sip_uri_param(pool, "sip:e@x.org;lr", "list"));
    ck_assert_int_eq(sip_uri_headers(pool, "sip:b@x.org;transport=tcp?Subject=Hi%20Bob&s=x", &h, &bare), 0);
    ck_assert_int_eq(h->nelts, 2);
    ck_assert_str_eq(APR_ARRAY_IDX(h, 0, sip_header_t).value, "Hi Bob");
    ck_assert_str_eq(APR_ARRAY_IDX(h, 1, sip_header_t).name, "Subject");
    ck_assert_str_eq(bare, "sip:b@x.org;transport=tcp");
    ck_assert_str_eq(sip_uri_request_form(pool, "sip:u@h:5;maddr=1.2.3.4;ttl=2;user=ip;method=INVITE;x?a=b"),
                     "sip:u@h:5;maddr=1.2.3.4;ttl=2;user=ip;x");
    ck_assert_ptr_null(sip_uri_request_form(pool, "tel:+123"));
    ck_assert_ptr_null(sip_uri_request_form(pool, "sip:bob@exa mple.org"));
    ck_assert_str_eq(sip_header_drop_param(pool, "sip:a@b;tag=1;x", "tag"), "<sip:a@b>;x");
    ck_assert_str_eq(sip_header_drop_param(pool, "\"A;<b\" <sip:a@b;tag=z>;TAG=1", "tag"),
                     "\"A;<b\" <sip:a@b;tag=z>");
}
END_TEST

static Suite *explode_suite(void)
{
    Suite *s = suite_create("explode");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, test_explode_x1);
    tcase_add_test(tc, test_explode_overrides);
    tcase_add_test(tc, test_explode_dups_recursion);
    tcase_add_test(tc, test_explode_refusals);
    tcase_add_test(tc, test_explode_forms);
    tcase_add_test(tc, test_explode_message);
    tcase_add_test(tc, test_explode_uri_helpers);
    suite_add_tcase(s, tc);
    return s;
}

/* ------------------------------------------------------------------ */
/* URI lists (sip_uri_list.c): RFC 4826, RFC 5364 copy control, merge */

#define UL_RL "<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\" " \
              "xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\">"

static apr_array_header_t *ul_parse_ok(const char *xml, int max)
{
    apr_array_header_t *e = NULL;
    const char *why = NULL;
    int rc = sip_uri_list_parse(pool, xml, strlen(xml), max, &e, &why);

    ck_assert_msg(rc == 0, "parse failed (%d): %s", rc, why ? why : "");
    ck_assert_ptr_nonnull(e);
    return e;
}

static const sip_uri_list_entry_t *ul_at(const apr_array_header_t *e, int i)
{
    return &APR_ARRAY_IDX(e, i, sip_uri_list_entry_t);
}

START_TEST(ul_draft_example)
{
    /* the EXPLODE draft's document: no namespace, a name= attribute */
    apr_array_header_t *e = ul_parse_ok(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<resource-lists xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n"
        " <list>\n"
        "  <entry name=\"1\" uri=\"sip:bill@example.org\"/>\n"
        "  <entry name=\"2\" uri=\"sip:joe@example.org\"/>\n"
        "  <entry name=\"3\" uri=\"sip:ted@example.org\"/>\n"
        "  <entry name=\"4\" uri=\"sip:bob@example.org\"/>\n"
        " </list>\n</resource-lists>\n", 0);

    ck_assert_int_eq(e->nelts, 4);
    ck_assert_str_eq(ul_at(e, 0)->uri, "sip:bill@example.org");
    ck_assert_str_eq(ul_at(e, 3)->uri, "sip:bob@example.org");
    ck_assert_int_eq(ul_at(e, 0)->copy, SIP_COPY_BCC);
    ck_assert_int_eq(ul_at(e, 0)->anonymize, 0);
    ck_assert_ptr_null(ul_at(e, 0)->display);
}
END_TEST

START_TEST(ul_nested)
{
    apr_array_header_t *e = ul_parse_ok(
        "<?xml version=\"1.0\"?>" UL_RL
        "<list name=\"a\"><display-name>Friends</display-name>"
        " <entry uri=\"sip:a@x.org\"><display-name> Al &amp; Co </display-name></entry>"
        " <list name=\"b\"><entry uri=\"sip:b@x.org\"/>"
        "  <list><entry uri=\"tel:+15551234\"/></list></list>"
        " <entry-ref ref=\"users/x/index/~~/resource-lists/list%5b@name=%22y%22%5d\"/>"
        " <external anchor=\"http://xcap.example.org/lists/z\"/>"
        " <entry><display-name>no uri</display-name></entry>"
        " <entry uri=\"\"/>"
        " <entry uri=\"sip:c@x.org\"/></list>"
        "<list><entry uri=\"sip:d@x.org\"/></list>"
        "</resource-lists>", 0);

    ck_assert_int_eq(e->nelts, 5);
    ck_assert_str_eq(ul_at(e, 0)->uri, "sip:a@x.org");
    ck_assert_str_eq(ul_at(e, 0)->display, "Al & Co");
    ck_assert_str_eq(ul_at(e, 1)->uri, "sip:b@x.org");
    ck_assert_str_eq(ul_at(e, 2)->uri, "tel:+15551234");
    ck_assert_str_eq(ul_at(e, 3)->uri, "sip:c@x.org");
    ck_assert_str_eq(ul_at(e, 4)->uri, "sip:d@x.org");
}
END_TEST

START_TEST(ul_copy_control)
{
    apr_array_header_t *e = ul_parse_ok(
        "<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\" "
        "xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\" "
        "xmlns:cc=\"urn:ietf:params:xml:ns:copyControl\" xmlns:o=\"urn:other\"><list>"
        "<entry uri=\"sip:1@x\" cp:copyControl=\"to\"/>"
        "<entry uri=\"sip:2@x\" cc:copyControl=\"cc\" cc:anonymize=\"true\"/>"
        "<entry uri=\"sip:3@x\" cp:copyControl=\"bcc\" cp:anonymize=\"1\"/>"
        "<entry uri=\"sip:4@x\" cp:copyControl=\"TO\" cp:anonymize=\"false\"/>"
        "<entry uri=\"sip:5@x\" copyControl=\"cc\" anonymize=\"true\"/>"
        "<entry uri=\"sip:6@x\" o:copyControl=\"to\" o:anonymize=\"true\"/>"
        "<entry uri=\"sip:7@x\"/>"
        "</list></resource-lists>", 0);

    ck_assert_int_eq(e->nelts, 7);
    ck_assert_int_eq(ul_at(e, 0)->copy, SIP_COPY_TO);
    ck_assert_int_eq(ul_at(e, 0)->anonymize, 0);
    ck_assert_int_eq(ul_at(e, 1)->copy, SIP_COPY_CC);      /* RFC 5366 spelling */
    ck_assert_int_eq(ul_at(e, 1)->anonymize, 1);
    ck_assert_int_eq(ul_at(e, 2)->copy, SIP_COPY_BCC);
    ck_assert_int_eq(ul_at(e, 2)->anonymize, 1);
    ck_assert_int_eq(ul_at(e, 3)->copy, SIP_COPY_BCC);     /* unknown value */
    ck_assert_int_eq(ul_at(e, 3)->anonymize, 0);
    ck_assert_int_eq(ul_at(e, 4)->copy, SIP_COPY_CC);      /* no namespace: draft leniency */
    ck_assert_int_eq(ul_at(e, 4)->anonymize, 1);
    ck_assert_int_eq(ul_at(e, 5)->copy, SIP_COPY_BCC);     /* another namespace's */
    ck_assert_int_eq(ul_at(e, 5)->anonymize, 0);
    ck_assert_int_eq(ul_at(e, 6)->copy, SIP_COPY_BCC);
}
END_TEST

static const char *ul_n_entries(int n)
{
    const char *s = UL_RL "<list>";
    int i;

    for (i = 0; i < n; i++)
        s = apr_psprintf(pool, "%s<entry uri=\"sip:u%d@example.org\"/>", s, i);
    return apr_pstrcat(pool, s, "</list></resource-lists>", NULL);
}

START_TEST(ul_too_many)
{
    apr_array_header_t *e = NULL;
    const char *why = NULL, *x = ul_n_entries(6);

    ck_assert_int_eq(ul_parse_ok(x, 6)->nelts, 6);
    ck_assert_int_eq(ul_parse_ok(x, 0)->nelts, 6);          /* max 0: no cap */
    ck_assert_int_eq(sip_uri_list_parse(pool, x, strlen(x), 5, &e, &why),
                     SIP_URI_LIST_TOO_MANY);
    ck_assert_ptr_null(e);
    ck_assert_ptr_nonnull(why);
}
END_TEST

static void ul_refused(const char *xml, const char *why_has)
{
    apr_array_header_t *e = NULL;
    const char *why = NULL;

    ck_assert_int_eq(sip_uri_list_parse(pool, xml, strlen(xml), 100, &e, &why), -1);
    ck_assert_ptr_null(e);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strstr(why, why_has), "why \"%s\" lacks \"%s\"", why, why_has);
}

START_TEST(ul_bad_documents)
{
    char deep[4096] = UL_RL;
    int i;

    ul_refused(UL_RL "<list><entry uri=\"sip:a@x\"></list></resource-lists>", "well-formed");
    ul_refused("<resource-lists xmlns=\"urn:other\"><list/></resource-lists>", "root");
    ul_refused("<lists><list><entry uri=\"sip:a@x\"/></list></lists>", "root");
    ul_refused("", "empty");
    /* XXE and billion laughs: any DOCTYPE is refused, nothing is expanded */
    ul_refused("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
               UL_RL "<list><entry uri=\"sip:&x;@x\"/></list></resource-lists>", "DOCTYPE");
    ul_refused("<!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">"
               "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;\">]>"
               UL_RL "<list><entry uri=\"sip:&c;@x\"/></list></resource-lists>", "DOCTYPE");
    ul_refused(UL_RL "<list><entry uri=\"sip:&x;@x\"/></list></resource-lists>", "well-formed");
    /* 33 nested lists: one too deep */
    for (i = 0; i < 33; i++)
        strcat(deep, "<list>");
    strcat(deep, "<entry uri=\"sip:a@x\"/>");
    for (i = 0; i < 33; i++)
        strcat(deep, "</list>");
    strcat(deep, "</resource-lists>");
    ul_refused(deep, "nested");
}
END_TEST

static sip_uri_list_entry_t *ul_add(apr_array_header_t *a, const char *uri,
                                    sip_copy_control_t copy, int anonymize)
{
    sip_uri_list_entry_t *e = apr_array_push(a);

    e->uri = uri;
    e->display = NULL;
    e->copy = copy;
    e->anonymize = anonymize;
    return e;
}

START_TEST(ul_merge_equal)
{
    apr_array_header_t *in = apr_array_make(pool, 4, sizeof(sip_uri_list_entry_t)), *out;

    ul_add(in, "sip:bob@example.org", SIP_COPY_BCC, 0)->display = "Bob";
    ul_add(in, "tel:+1555", SIP_COPY_BCC, 0);
    ul_add(in, "sip:bob@EXAMPLE.ORG", SIP_COPY_CC, 0);
    ul_add(in, "sip:bob@example.org?Subject=x", SIP_COPY_TO, 0);
    ul_add(in, "sip:Bob@example.org", SIP_COPY_BCC, 1);   /* user is case-sensitive */
    ul_add(in, "sip:bob@example.org;transport=tcp", SIP_COPY_BCC, 0);
    ul_add(in, "tel:+1555", SIP_COPY_CC, 1);
    ul_add(in, "TEL:+1555", SIP_COPY_BCC, 0);              /* not SIP: exact strings */
    out = sip_uri_list_merge(pool, in);
    ck_assert_int_eq(out->nelts, 5);
    ck_assert_str_eq(ul_at(out, 0)->uri, "sip:bob@example.org");
    ck_assert_str_eq(ul_at(out, 0)->display, "Bob");
    ck_assert_int_eq(ul_at(out, 0)->copy, SIP_COPY_TO);
    ck_assert_int_eq(ul_at(out, 0)->anonymize, 0);
    ck_assert_str_eq(ul_at(out, 1)->uri, "tel:+1555");
    ck_assert_int_eq(ul_at(out, 1)->copy, SIP_COPY_CC);
    ck_assert_int_eq(ul_at(out, 1)->anonymize, 1);
    ck_assert_str_eq(ul_at(out, 2)->uri, "sip:Bob@example.org");
    ck_assert_str_eq(ul_at(out, 3)->uri, "sip:bob@example.org;transport=tcp");
    ck_assert_str_eq(ul_at(out, 4)->uri, "TEL:+1555");
    /* the input is left as it was */
    ck_assert_int_eq(ul_at(in, 0)->copy, SIP_COPY_BCC);
}
END_TEST

START_TEST(ul_merge_large)
{
    apr_array_header_t *in = apr_array_make(pool, 20000, sizeof(sip_uri_list_entry_t)), *out;
    apr_time_t t0;
    int i;

    for (i = 0; i < 10000; i++)
        ul_add(in, apr_psprintf(pool, "sip:user%d@example.org", i), SIP_COPY_BCC, 0);
    for (i = 0; i < 10000; i++)
        ul_add(in, apr_psprintf(pool, "sip:user%d@Example.ORG", i), SIP_COPY_CC, 0);
    t0 = apr_time_now();
    out = sip_uri_list_merge(pool, in);
    ck_assert_int_eq(out->nelts, 10000);
    ck_assert_int_eq(ul_at(out, 9999)->copy, SIP_COPY_CC);
    ck_assert_str_eq(ul_at(out, 9999)->uri, "sip:user9999@example.org");
    /* linear: about 50 ms unloaded; a quadratic merge (2e8 URI comparisons)
     * takes minutes, so a loaded machine's margin can be wide */
    ck_assert_int_lt(apr_time_now() - t0, apr_time_from_sec(5));
}
END_TEST

START_TEST(ul_history)
{
    apr_array_header_t *in = apr_array_make(pool, 8, sizeof(sip_uri_list_entry_t)), *back;
    const char *h, *why = NULL;
    apr_size_t n = 0;
    int i;

    ul_add(in, "sip:bill@example.com", SIP_COPY_TO, 0)->display = "Bill <&> \"B\"";
    ul_add(in, "sip:randy@example.net", SIP_COPY_TO, 1);
    ul_add(in, "sip:joe@example.org?a=1&b=2", SIP_COPY_CC, 0);
    ul_add(in, "sip:eddy@example.com", SIP_COPY_TO, 1);
    ul_add(in, "sip:carol@example.net", SIP_COPY_CC, 1);
    ul_add(in, "sip:ted@example.net", SIP_COPY_BCC, 0);
    ul_add(in, "sip:andy@example.com", SIP_COPY_BCC, 1);
    h = sip_uri_list_history(pool, in, &n);
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(n, strlen(h));
    ck_assert_ptr_nonnull(strstr(h, "xmlns=\"urn:ietf:params:xml:ns:resource-lists\""));
    ck_assert_ptr_nonnull(strstr(h, "xmlns:cp=\"urn:ietf:params:xml:ns:copycontrol\""));
    ck_assert_ptr_nonnull(strstr(h, "<entry uri=\"sip:bill@example.com\" cp:copyControl=\"to\">"));
    ck_assert_ptr_nonnull(strstr(h, "<display-name>Bill &lt;&amp;&gt; \"B\"</display-name>"));
    ck_assert_ptr_nonnull(strstr(h, "<entry uri=\"sip:anonymous@anonymous.invalid\" "
                                    "cp:copyControl=\"to\" cp:anonymize=\"true\" cp:count=\"2\"/>"));
    ck_assert_ptr_nonnull(strstr(h, "<entry uri=\"sip:joe@example.org?a=1&amp;b=2\" "
                                    "cp:copyControl=\"cc\"/>"));
    ck_assert_ptr_nonnull(strstr(h, "<entry uri=\"sip:anonymous@anonymous.invalid\" "
                                    "cp:copyControl=\"cc\" cp:anonymize=\"true\" cp:count=\"1\"/>"));
    ck_assert_ptr_null(strstr(h, "randy"));
    ck_assert_ptr_null(strstr(h, "eddy"));
    ck_assert_ptr_null(strstr(h, "carol"));
    ck_assert_ptr_null(strstr(h, "ted"));
    ck_assert_ptr_null(strstr(h, "andy"));
    /* it reads back as the resource list it says */
    ck_assert_int_eq(sip_uri_list_parse(pool, h, n, 0, &back, &why), 0);
    ck_assert_int_eq(back->nelts, 4);
    ck_assert_str_eq(ul_at(back, 0)->uri, "sip:bill@example.com");
    ck_assert_str_eq(ul_at(back, 0)->display, "Bill <&> \"B\"");
    ck_assert_int_eq(ul_at(back, 1)->copy, SIP_COPY_TO);
    ck_assert_int_eq(ul_at(back, 1)->anonymize, 1);
    ck_assert_str_eq(ul_at(back, 2)->uri, "sip:joe@example.org?a=1&b=2");
    ck_assert_int_eq(ul_at(back, 2)->copy, SIP_COPY_CC);
    ck_assert_int_eq(ul_at(back, 3)->copy, SIP_COPY_CC);
    /* only bcc entries: no history */
    apr_array_clear(in);
    for (i = 0; i < 3; i++)
        ul_add(in, "sip:x@y", SIP_COPY_BCC, i == 1);
    ck_assert_ptr_null(sip_uri_list_history(pool, in, &n));
    ck_assert_uint_eq(n, 0);
}
END_TEST

static Suite *uri_list_suite(void)
{
    Suite *s = suite_create("uri_list");
    TCase *tc = tcase_create("uri_list");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, ul_draft_example);
    tcase_add_test(tc, ul_nested);
    tcase_add_test(tc, ul_copy_control);
    tcase_add_test(tc, ul_too_many);
    tcase_add_test(tc, ul_bad_documents);
    tcase_add_test(tc, ul_merge_equal);
    tcase_add_test(tc, ul_merge_large);
    tcase_add_test(tc, ul_history);
    suite_add_tcase(s, tc);
    return s;
}

/* ------------------------------------------------------------------ */
/* consent (sip_consent.c): the administrator's opt-in list            */

static void consent_bad(const char *text, const char *expect)
{
    const char *why = NULL;

    ck_assert_ptr_null(sip_consent_parse(pool, "c.conf", text, &why));
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(!strncmp(why, expect, strlen(expect)), "why \"%s\", wanted \"%s...\"", why,
                  expect);
}

START_TEST(consent_errors)
{
    consent_bad("# ok\n\nsip:bob@example.org\nbob@example.org alice\n", "c.conf:4: ");
    consent_bad("sip:example.org *\n", "c.conf:1: ");
    consent_bad("\n\n\nsip:bob@example.org tel:+1234\n", "c.conf:4: ");
    consent_bad("sip:bob@example.org:5060\n", "c.conf:1: ");
    consent_bad("sip:bob@example.org;transport=tcp\n", "c.conf:1: ");
    consent_bad("sip:@example.org\n", "c.conf:1: ");
    consent_bad("sip:b%zzb@example.org\n", "c.conf:1: ");
    consent_bad(apr_pstrcat(pool, "sip:a@b ", apr_psprintf(pool, "%5000s", "x"), NULL),
                "c.conf:1: ");
}
END_TEST

START_TEST(consent_matching)
{
    const char *why = NULL;
    sip_consent_t *c = sip_consent_parse(pool, "c.conf",
        "# target               invokers\n"
        "sip:bob@example.org    alice sip:carol@example.org   # trailing comment\n"
        "sip:*@open.example.org\n"
        "sip:ann@Example.COM    *\n"
        "sip:sales-??@example.org sip:*@partner.example.net\n"
        "sips:sec@example.org   alice\n"
        "sip:b%6Fss@example.org alice\n", &why);

    ck_assert_msg(c != NULL, "%s", why);
    /* invoker by name, by AoR, and nobody else */
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", "alice", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "<sip:bob@EXAMPLE.org;transport=tcp>",
                                        "alice", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", "carol",
                                        "sip:carol@Example.ORG"), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", "Alice",
                                        "sip:mallory@example.org"), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", "carol", NULL), 0);
    /* user parts are case-sensitive, hosts not */
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:Bob@example.org", "alice", NULL), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:ann@example.com", "x", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:Ann@example.com", "x", NULL), 0);
    /* wildcards; no invokers = any authenticated user */
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:anyone@OPEN.example.org", "x", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:anyone@open.example.org", NULL, NULL), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:anyone@evil.example.org", "x", NULL), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:sales-eu@example.org", "x",
                                        "sip:y@partner.example.net"), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:sales-eur@example.org", "x",
                                        "sip:y@partner.example.net"), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:sales-eu@example.org", "x",
                                        "sip:y@example.net"), 0);
    /* sip and sips are different addresses (RFC 3261 §19.1.4) */
    ck_assert_int_eq(sip_consent_allows(c, pool, "sips:sec@example.org", "alice", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:sec@example.org", "alice", NULL), 0);
    /* %-escapes: compared decoded, as libosip2 decodes the target */
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:boss@example.org", "alice", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:b%6fss@example.org", "alice", NULL), 1);
    /* not a SIP address, no rules, no user */
    ck_assert_int_eq(sip_consent_allows(c, pool, "tel:+15551234", "alice", NULL), 0);
    ck_assert_int_eq(sip_consent_allows(NULL, pool, "sip:bob@example.org", "alice", NULL), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", NULL, NULL), 0);
}
END_TEST

START_TEST(consent_file)
{
    char path[] = "/tmp/consent_test_XXXXXX";
    const char *why = NULL;
    sip_consent_t *c;
    int fd = mkstemp(path);
    FILE *f;

    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    fputs("sip:bob@example.org alice\r\nsip:joe@example.org\n", f);
    fclose(f);
    c = sip_consent_load(pool, path, &why);
    ck_assert_msg(c != NULL, "%s", why);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", "alice", NULL), 1);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:bob@example.org", "joe", NULL), 0);
    ck_assert_int_eq(sip_consent_allows(c, pool, "sip:joe@example.org", "bob", NULL), 1);
    f = fopen(path, "w");
    fputs("sip:bob@example.org alice\nsip:joe\n", f);
    fclose(f);
    ck_assert_ptr_null(sip_consent_load(pool, path, &why));
    ck_assert_str_eq(why, apr_pstrcat(pool, path, ":2: target sip:joe: no user part (user@host)",
                                      NULL));
    unlink(path);
    ck_assert_ptr_null(sip_consent_load(pool, path, &why));
    ck_assert_ptr_nonnull(strstr(why, path));
}
END_TEST

static Suite *consent_suite(void)
{
    Suite *s = suite_create("consent");
    TCase *tc = tcase_create("consent");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, consent_errors);
    tcase_add_test(tc, consent_matching);
    tcase_add_test(tc, consent_file);
    suite_add_tcase(s, tc);
    return s;
}


/* ---- sip_proxy_send_new / sip_proxy_originate: one Via, one branch id ---- */

START_TEST(plumb_with_via)
{
    static const char req[] = "MESSAGE sip:bob@example.org SIP/2.0\r\n"
                              "To: <sip:bob@example.org>\r\nContent-Length: 0\r\n\r\n";
    apr_size_t len = 0;
    const char *out = with_via(pool, req, sizeof(req) - 1, SIP_TP_TCP, "192.0.2.1:5060",
                               "z9hG4bKx1", &len);

    ck_assert_uint_eq(len, strlen(out));
    ck_assert_str_eq(out, "MESSAGE sip:bob@example.org SIP/2.0\r\n"
                          "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKx1;rport\r\n"
                          "To: <sip:bob@example.org>\r\nContent-Length: 0\r\n\r\n");
    out = with_via(pool, req, sizeof(req) - 1, SIP_TP_UDP, "h:1", "z9hG4bKx2", &len);
    ck_assert_ptr_nonnull(strstr(out, "\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bKx2;rport\r\nTo:"));
}
END_TEST

START_TEST(plumb_branch_unique)
{
    apr_hash_t *seen = apr_hash_make(pool);
    int i;

    for (i = 0; i < 1000; i++) {
        const char *b = new_branch_id(pool);
        ck_assert_msg(strncmp(b, "z9hG4bK", 7) == 0, "no magic cookie: %s", b);
        ck_assert_msg(!apr_hash_get(seen, b, APR_HASH_KEY_STRING), "branch repeated: %s", b);
        apr_hash_set(seen, b, APR_HASH_KEY_STRING, b);
    }
}
END_TEST

START_TEST(plumb_send_own_refuses)
{
    static const char bad[] = "this is not SIP\r\n\r\n";
    static const char good[] = "MESSAGE sip:bob@nonexistent.invalid SIP/2.0\r\n"
                               "Route: <sip:edge.example.net;lr>\r\n"
                               "From: <sip:a@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\n"
                               "Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
                               "Content-Length: 0\r\n\r\n";
    server_rec srv;
    const char *why = NULL, *next = NULL;

    memset(&srv, 0, sizeof(srv));
    srv.server_hostname = "example.org";
    sip_transport_init(NULL, pool, NULL, NULL);     /* no socket: our Via names the host */
    sip_proxy_init(pool);
    ck_assert_int_eq(sip_proxy_send_new(&srv, bad, sizeof(bad) - 1, NULL, NULL), 0);
    ck_assert_ptr_null(own_parse(pool, &srv, bad, sizeof(bad) - 1, &next, &why));
    ck_assert_msg(why && strncmp(why, "not valid SIP", 13) == 0, "why: %s", why ? why : "");
    /* RFC 3261 §8.1.2: the first Route is the next hop */
    ck_assert_ptr_nonnull(own_parse(pool, &srv, good, sizeof(good) - 1, &next, &why));
    ck_assert_str_eq(next, "sip:edge.example.net;lr");
}
END_TEST

/* RFC 3327 §5.4: Path values as the Route set, a strict first hop takes
 * the Request-URI (RFC 3261 §16.6 step 6); a binding's received address */
START_TEST(plumb_path_route_set)
{
    static const char inv[] = "INVITE sip:bob@example.org SIP/2.0\r\n"
                              "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKp1\r\n"
                              "From: <sip:a@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\n"
                              "Call-ID: p1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                              "Content-Length: 0\r\n\r\n";
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    sip_wire_edit_t e;
    sip_sockaddr_t a;
    const char *next, *reason, *what;

    ck_assert_int_eq(sip_msg_parse(pool, inv, sizeof(inv) - 1, NULL, 0, &m, &err), APR_SUCCESS);
    next = route_edits(pool, m, "sip:bob@10.0.0.5:5062", "<sip:e1.example.net;lr>, "
                       "<sip:e2.example.net;lr>", &e);
    ck_assert_str_eq(next, "sip:e1.example.net;lr");
    ck_assert_str_eq(e.request_uri, "sip:bob@10.0.0.5:5062");
    ck_assert_str_eq(e.extra, "Route: <sip:e1.example.net;lr>,<sip:e2.example.net;lr>\r\n");
    next = route_edits(pool, m, "sip:bob@10.0.0.5", "<sip:strict.example.net>, "
                       "<sip:e2.example.net;lr>", &e);
    ck_assert_str_eq(next, "sip:strict.example.net");
    ck_assert_str_eq(e.request_uri, "sip:strict.example.net");
    ck_assert_str_eq(e.extra, "Route: <sip:e2.example.net;lr>,<sip:bob@10.0.0.5>\r\n");
    next = route_edits(pool, m, "sip:bob@10.0.0.5", NULL, &e);
    ck_assert_str_eq(next, "sip:bob@10.0.0.5");
    ck_assert_ptr_null(e.extra);
    ck_assert_int_eq(parse_hostport(pool, "127.0.0.1:5099", &a), 1);
    ck_assert_int_eq(sip_sockaddr_port(&a), 5099);
    ck_assert_int_eq(parse_hostport(pool, "[::1]:5098", &a), 1);
    ck_assert_int_eq(sip_sockaddr_port(&a), 5098);
    ck_assert_int_eq(parse_hostport(pool, "192.0.2.1", &a), 1);
    ck_assert_int_eq(sip_sockaddr_port(&a), 5060);
    ck_assert_int_eq(parse_hostport(pool, "nohost:x", &a), 0);
    /* issue 17 point 5 */
    ck_assert_int_eq(unresolved_status(SIP_DNS_NOTFOUND, 0, &reason, &what), 404);
    ck_assert_int_eq(unresolved_status(SIP_DNS_NOTFOUND, 1, &reason, &what), 480);
    ck_assert_int_eq(unresolved_status(SIP_DNS_TIMEOUT, 0, &reason, &what), 408);
    ck_assert_int_eq(unresolved_status(SIP_DNS_FAILED, 0, &reason, &what), 503);
}
END_TEST

/* ---- sip_options: Allow, Supported, Require ---- */

static sip_msg_t *opt_req(const char *method, const char *uri)
{
    const char *text = apr_psprintf(pool, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch="
                                    "z9hG4bKo1\r\nFrom: <sip:a@example.org>;tag=1\r\nTo: <%s>\r\n"
                                    "Call-ID: o1\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n"
                                    "Content-Length: 0\r\n\r\n", method, uri, uri, method);
    sip_msg_t *m = NULL;
    sip_msg_error_t err;

    ck_assert_int_eq(sip_msg_parse(pool, text, strlen(text), NULL, 0, &m, &err), APR_SUCCESS);
    return m;
}

static int opt_has(const char *const *h, const char *name, const char *value)
{
    for (; h[0]; h += 2)
        if (!strcmp(h[0], name) && (!value || strstr(h[1], value)))
            return 1;
    return 0;
}

START_TEST(opt_unsupported)
{
    server_rec srv;
    sip_msg_t *msg = opt_req("MESSAGE", "sip:list@example.org");
    sip_msg_t *inv = opt_req("INVITE", "sip:list@example.org");
    sip_msg_t *other = opt_req("MESSAGE", "sip:bob@example.org");

    memset(&srv, 0, sizeof(srv));
    stub_explode_aor = NULL;
    /* RFC 5366 is not offered: 420 Unsupported: recipient-list-invite (X12) */
    ck_assert_str_eq(sip_options_unsupported(pool, &srv, inv, "recipient-list-invite"),
                     "recipient-list-invite");
    ck_assert_str_eq(sip_options_unsupported(pool, &srv, msg, " foo ,recipient-list-message"),
                     "foo, recipient-list-message");
    stub_explode_aor = "sip:list@example.org";
    ck_assert_ptr_null(sip_options_unsupported(pool, &srv, msg, "recipient-list-message"));
    ck_assert_ptr_null(sip_options_unsupported(pool, &srv, msg, "Recipient-List-Message"));
    ck_assert_str_eq(sip_options_unsupported(pool, &srv, msg, "foo, recipient-list-message, bar"),
                     "foo, bar");
    /* only a MESSAGE, and only for an address with the service */
    ck_assert_str_eq(sip_options_unsupported(pool, &srv, inv, "recipient-list-message"),
                     "recipient-list-message");
    ck_assert_str_eq(sip_options_unsupported(pool, &srv, other, "recipient-list-message"),
                     "recipient-list-message");
    ck_assert_str_eq(sip_options_unsupported(pool, &srv, msg, "recipient-list-invite"),
                     "recipient-list-invite");
    ck_assert_ptr_null(sip_options_unsupported(pool, &srv, msg, " , "));
    stub_explode_aor = NULL;
}
END_TEST

START_TEST(opt_allow_supported)
{
    server_rec srv;
    const char *const *h;

    memset(&srv, 0, sizeof(srv));
    stub_explode_aor = NULL;
    ck_assert_ptr_null(strstr(sip_options_allow(pool, &srv, "sip:list@example.org"), "EXPLODE"));
    ck_assert_ptr_nonnull(strstr(sip_options_allow(pool, &srv, "sip:list@example.org"),
                                 "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK"));
    h = sip_options_headers(pool, &srv, "sip:list@example.org");
    ck_assert(opt_has(h, "Allow", "MESSAGE"));
    ck_assert(opt_has(h, "Accept", "application/sdp"));
    ck_assert(!opt_has(h, "Supported", NULL));
    stub_explode_aor = "sip:list@example.org";
    ck_assert_ptr_nonnull(strstr(sip_options_allow(pool, &srv, "sip:list@example.org"), ", EXPLODE"));
    ck_assert_ptr_null(strstr(sip_options_allow(pool, &srv, "sip:bob@example.org"), "EXPLODE"));
    h = sip_options_headers(pool, &srv, "sip:list@example.org");
    ck_assert(opt_has(h, "Allow", "EXPLODE"));
    ck_assert(opt_has(h, "Supported", "recipient-list-message"));
    ck_assert(!opt_has(h, "Supported", "recipient-list-invite"));
    stub_explode_aor = NULL;
}
END_TEST

START_TEST(opt_method_known)
{
    ck_assert(sip_options_method_known(NULL, "MESSAGE"));
    ck_assert(sip_options_method_known(NULL, "PUBLISH"));
    ck_assert(!sip_options_method_known(NULL, "message"));
    ck_assert(!sip_options_method_known(NULL, "FOO"));
}
END_TEST

static Suite *plumb_suite(void)
{
    Suite *s = suite_create("xplumb");
    TCase *tc = tcase_create("proxy_send_new");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, plumb_with_via);
    tcase_add_test(tc, plumb_branch_unique);
    tcase_add_test(tc, plumb_send_own_refuses);
    tcase_add_test(tc, plumb_path_route_set);
    suite_add_tcase(s, tc);
    tc = tcase_create("options");
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, opt_unsupported);
    tcase_add_test(tc, opt_allow_supported);
    tcase_add_test(tc, opt_method_known);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- call handling rules (sip_rules.c: SipRule, SipRuleFile) ---- */

static const sip_rule_t *rl_parse(const char *args, const char **err)
{
    return sip_rule_parse(pool, args, err);
}

/* the rule parses, or the test fails with why */
static const sip_rule_t *rl_ok(const char *args)
{
    const char *err = NULL;
    const sip_rule_t *r = rl_parse(args, &err);

    ck_assert_msg(r != NULL, "'%s' refused: %s", args, err ? err : "?");
    return r;
}

/* refused, with 'why' in the message */
static void rl_bad(const char *args, const char *why)
{
    const char *err = NULL;

    ck_assert_msg(rl_parse(args, &err) == NULL, "'%s' accepted", args);
    ck_assert_msg(err && strstr(err, why), "'%s': '%s' lacks '%s'", args, err ? err : "", why);
}

START_TEST(rules_parse_actions)
{
    const sip_rule_t *r;

    rl_bad("", "needs an action");
    {
        const char *err = NULL;
        r = sip_rule_parse_at(pool, "log", "sites/sip.conf:7", &err);
        ck_assert_ptr_nonnull(r);
        ck_assert_str_eq(r->where, "sites/sip.conf:7");     /* named in run-time log lines */
        ck_assert_str_eq(rl_ok("log")->where, "SipRule");
    }
    rl_bad("frobnicate", "unknown action 'frobnicate'");
    /* log */
    r = rl_ok("log");
    ck_assert_str_eq(r->action->name, "log");
    ck_assert_int_eq(r->argc, 0);
    ck_assert_ptr_null(r->header);
    r = rl_ok("log aol-calls");
    ck_assert_str_eq(r->argv[0], "aol-calls");
    rl_bad("log |/usr/local/bin/logger", "CustomLog");
    rl_bad("log /var/log/sip.log", "env=sip-rule-log");
    rl_bad("log common calls.log", "CustomLog");
    rl_bad("log bad$name", "not an environment variable");
    /* respond */
    r = rl_ok("respond 404");
    ck_assert_str_eq(r->action->name, "respond");
    ck_assert_int_eq(r->status, 404);
    r = rl_ok("respond 302 sip:a@example.org sips:b@example.org:5061;transport=tcp");
    ck_assert_int_eq(r->status, 302);
    ck_assert_int_eq(r->argc, 3);
    ck_assert_str_eq(r->argv[2], "sips:b@example.org:5061;transport=tcp");
    r = rl_ok("RESPOND 200");
    ck_assert_int_eq(r->status, 200);
    r = rl_ok("486");                   /* a bare status is respond */
    ck_assert_int_eq(r->status, 486);
    rl_bad("respond", "status from 200 to 699");
    rl_bad("respond 180", "status from 200 to 699");
    rl_bad("respond 4040", "status from 200 to 699");
    rl_bad("respond abc", "status from 200 to 699");
    rl_bad("respond 404 sip:a@example.org", "only a 3xx");
    rl_bad("respond 200 sip:a@example.org", "only a 3xx");
    rl_bad("respond 302 <sip:a@example.org>", "not a URI");
    rl_bad("respond 302 nowhere", "not a URI");
    rl_bad("respond 302 \"sip:a@example.org,sip:b@example.org\"", "not a URI");
    /* proxy */
    r = rl_ok("proxy");
    ck_assert_int_eq(r->sequential, -1);
    ck_assert_int_eq(r->argc, 0);
    r = rl_ok("proxy sequential sip:a@127.0.0.1:5070 sip:b@127.0.0.1:5071");
    ck_assert_int_eq(r->sequential, 1);
    ck_assert_int_eq(r->argc, 2);
    ck_assert_str_eq(r->argv[0], "sip:a@127.0.0.1:5070");
    r = rl_ok("proxy parallel example.com 127.0.0.1:5070 [::1]:5060");
    ck_assert_int_eq(r->sequential, 0);
    ck_assert_int_eq(r->argc, 3);
    r = rl_ok("proxy sequential");
    ck_assert_int_eq(r->sequential, 1);
    rl_bad("proxy bad/host", "neither a SIP URI nor a domain");
    rl_bad("proxy sip:", "neither a SIP URI nor a domain");
    rl_bad("proxy example.com:port", "neither a SIP URI nor a domain");
    rl_bad("proxy .example.com", "neither a SIP URI nor a domain");
    /* authenticate */
    ck_assert_int_eq(rl_ok("authenticate")->argc, 0);
    rl_ok("authenticate digest");
    rl_ok("authenticate Digest");
    rl_bad("authenticate basic", "only digest");
    rl_bad("authenticate pgp", "only digest");
    rl_bad("authenticate digest digest", "only digest");
    /* script */
    ck_assert_int_eq(rl_ok("script")->argc, 0);
    ck_assert_str_eq(rl_ok("script vacation")->argv[0], "vacation");
    rl_bad("script ../etc/passwd", "not a script name");
    rl_bad("script .hidden", "not a script name");
    rl_bad("script a/b", "not a script name");
    rl_bad("script /bin/sh", "a path only in a SipRuleFile");
    rl_bad("script a b", "at most one");
    /* record */
    r = rl_ok("record voice-mail.example.org");
    ck_assert_str_eq(r->action->name, "record");
    rl_bad("record", "one host");
    rl_bad("record a.example b.example", "one host");
    rl_bad("record sip:vm@example.org", "one host");
}
END_TEST

static const char *rl_file(const char *text)
{
    const char *path = apr_psprintf(pool, "/tmp/rules-unit-%ld.conf", (long)getpid());
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static const sip_rule_t *rl_at(apr_array_header_t *a, int i)
{
    return APR_ARRAY_IDX(a, i, const sip_rule_t *);
}

/* seed 002 §6's table, with its log line written for mod_sip and its
 * script path one that exists here */
START_TEST(rules_seed_table)
{
    static const char table[] =
        "# We log all calls, but not registrations.\n"
        "From * INVITE log\n"
        "\n"
        "# We allow registration only from local users\n"
        "From REGISTER cs.columbia.edu 200\n"
        "From REGISTER * 404\n"
        "\n"
        "# We forward calls to some alumni.\n"
        "To INVITE graduated@cs.columbia.edu 301 sip://vp@example.com\n"
        "\n"
        "# Calls to *-voicemail get voicemail (probably by indirection).\n"
        "To *-voicemail record voice-mail.cs.columbia.edu\n"
        "\n"
        "# All other calls are subject to callee-written (user-specific) scripts.\n"
        "To INVITE cs.columbia.edu /bin/true\n"
        "\n"
        "# We are a redirect server; the server figures out the location.\n"
        "To INVITE cs.columbia.edu 302\n"
        "\n"
        "# We require that AOL users are authenticated.\n"
        "From INVITE aol.com authenticate\n"
        "\n"
        "# We don't handle any other domains.\n"
        "To INVITE * 404\n";
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const sip_rule_t *));
    const char *path = rl_file(table), *err = NULL;
    const sip_rule_t *r;

    ck_assert_msg(sip_rule_file_read(pool, path, a, &err) == 0, "%s", err ? err : "");
    ck_assert_int_eq(a->nelts, 9);
    r = rl_at(a, 0);    /* method and glob the other way round, as the seed writes it */
    ck_assert_str_eq(r->header, "From");
    ck_assert_str_eq(r->method, "INVITE");
    ck_assert_str_eq(r->glob, "*");
    ck_assert_str_eq(r->action->name, "log");
    ck_assert_msg(strstr(r->where, ":2") != NULL, "%s", r->where);
    r = rl_at(a, 1);
    ck_assert_str_eq(r->method, "REGISTER");
    ck_assert_str_eq(r->glob, "cs.columbia.edu");
    ck_assert_int_eq(r->status, 200);
    ck_assert_int_eq(rl_at(a, 2)->status, 404);
    r = rl_at(a, 3);
    ck_assert_str_eq(r->header, "To");
    ck_assert_int_eq(r->status, 301);
    ck_assert_str_eq(r->argv[1], "sip:vp@example.com");     /* the seed's "sip://" */
    r = rl_at(a, 4);    /* no method: any */
    ck_assert_str_eq(r->method, "*");
    ck_assert_str_eq(r->glob, "*-voicemail");
    ck_assert_str_eq(r->action->name, "record");
    ck_assert_str_eq(r->argv[0], "voice-mail.cs.columbia.edu");
    r = rl_at(a, 5);    /* a path is a script */
    ck_assert_str_eq(r->action->name, "script");
    ck_assert_str_eq(r->argv[0], "/bin/true");
    r = rl_at(a, 6);
    ck_assert_int_eq(r->status, 302);
    ck_assert_int_eq(r->argc, 1);
    ck_assert_str_eq(rl_at(a, 7)->action->name, "authenticate");
    ck_assert_str_eq(rl_at(a, 7)->glob, "aol.com");
    ck_assert_str_eq(rl_at(a, 8)->method, "INVITE");
    ck_assert_str_eq(rl_at(a, 8)->glob, "*");
    unlink(path);
}
END_TEST

/* a bad line: refused with the file and its line number */
static void rl_file_bad(const char *text, int line, const char *why)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const sip_rule_t *));
    const char *path = rl_file(text), *err = NULL;
    const char *at = apr_psprintf(pool, "%s:%d: ", path, line);

    ck_assert_msg(sip_rule_file_read(pool, path, a, &err) == -1, "accepted: %s", text);
    ck_assert_msg(err && !strncmp(err, at, strlen(at)), "'%s' does not start with '%s'",
                  err ? err : "", at);
    ck_assert_msg(strstr(err, why), "'%s' lacks '%s'", err, why);
    unlink(path);
}

START_TEST(rules_file_errors)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const sip_rule_t *));
    const char *err = NULL;
    char big[5000];

    /* the seed's own log line: a log file is CustomLog's business */
    rl_file_bad("# calls\nFrom * INVITE log |/usr/local/bin/logger\n", 2,
                "CustomLog <file> <format> env=sip-rule-log");
    rl_file_bad("\n\n   \nTo INVITE\n", 4, "expected: Header Method glob action");
    rl_file_bad("To INVITE x.org respond 99\n", 1, "status from 200 to 699");
    rl_file_bad("To INVITE x.org 302 not-a-uri\n", 1, "not a URI");
    rl_file_bad("To INVITE x.org frobnicate\n", 1, "unknown action");
    rl_file_bad("To INVITE x.org\n", 1, "no action");
    rl_file_bad("To: INVITE x.org 404\n", 1, "not a header name");
    rl_file_bad("To invite x.org 404\n", 1, "not a method");
    rl_file_bad("To INVITE x.org /nonexistent/user_script\n", 1, "is not a file");
    {
        const char *plain = apr_psprintf(pool, "/tmp/rules-unit-plain-%ld", (long)getpid());
        FILE *f = fopen(plain, "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
        chmod(plain, 0644);
        rl_file_bad(apr_psprintf(pool, "To INVITE x.org %s\n", plain), 1, "is not executable");
        unlink(plain);
    }
    rl_file_bad("To INVITE x.org 404\nTo INVITE x.org 404 sip:a@b.org\n", 2, "only a 3xx");
    memset(big, 'a', sizeof(big) - 2);
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = 0;
    rl_file_bad(big, 1, "line longer");
    ck_assert_int_eq(sip_rule_file_read(pool, "/nonexistent/rules", a, &err), -1);
    ck_assert_msg(err && strstr(err, "/nonexistent/rules: "), "%s", err ? err : "");
    ck_assert_int_eq(a->nelts, 0);
}
END_TEST

static const sip_msg_t *rl_req(const char *method, const char *from, const char *to)
{
    const char *text = apr_psprintf(pool, "%s sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP "
                                    "192.0.2.9;branch=z9hG4bKr1\r\nFrom: %s;tag=1\r\nTo: %s\r\n"
                                    "Call-ID: r1\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n"
                                    "Content-Length: 0\r\n\r\n", method, from, to, method);
    return parse_ok(text);
}

/* does the table line 'line' match a request From 'from' To 'to'? */
static int rl_match(const char *line, const char *method, const char *from, const char *to)
{
    apr_array_header_t *a = apr_array_make(pool, 1, sizeof(const sip_rule_t *));
    const char *path = rl_file(line), *err = NULL;
    int m;

    ck_assert_msg(sip_rule_file_read(pool, path, a, &err) == 0, "%s", err ? err : "");
    ck_assert_int_eq(a->nelts, 1);
    unlink(path);
    m = sip_rule_matches(pool, rl_at(a, 0), rl_req(method, from, to));
    return m;
}

#define TO_BOB "<sip:bob@example.org>"

START_TEST(rules_globs)
{
    /* from the end, on a boundary (seed §6) */
    ck_assert(rl_match("From * columbia.edu 404", "INVITE", "<sip:x@erlang.cs.columbia.edu>",
                       TO_BOB));
    ck_assert(rl_match("From * columbia.edu 404", "INVITE", "<sip:x@columbia.edu>", TO_BOB));
    ck_assert(!rl_match("From * columbia.edu 404", "INVITE", "<sip:x@xcolumbia.edu>", TO_BOB));
    ck_assert(!rl_match("From * columbia.edu 404", "INVITE", "<sip:x@columbia.edu.evil.net>",
                        TO_BOB));
    ck_assert(rl_match("From * @columbia.edu 404", "INVITE", "<sip:foo@columbia.edu>", TO_BOB));
    ck_assert(!rl_match("From * @columbia.edu 404", "INVITE", "<sip:foo@cs.columbia.edu>",
                        TO_BOB));
    ck_assert(rl_match("From * .columbia.edu 404", "INVITE", "<sip:foo@cs.columbia.edu>", TO_BOB));
    ck_assert(!rl_match("From * .columbia.edu 404", "INVITE", "<sip:foo@columbia.edu>", TO_BOB));
    /* case-insensitive; ports and parameters are not the address */
    ck_assert(rl_match("From * COLUMBIA.edu 404", "INVITE", "\"X\" <sip:X@CS.Columbia.EDU:5070;"
                       "transport=tcp>", TO_BOB));
    ck_assert(rl_match("From * graduated@cs.columbia.edu 404", "INVITE",
                       "<sip:Graduated@cs.columbia.edu>", TO_BOB));
    ck_assert(!rl_match("From * graduated@cs.columbia.edu 404", "INVITE",
                        "<sip:ungraduated@cs.columbia.edu>", TO_BOB));
    /* wildcards: '*' and '?'; a glob without '@' may name the user */
    ck_assert(rl_match("To *-voicemail record vm.example.org", "INVITE", "<sip:a@b.org>",
                       "<sip:bob-voicemail@cs.columbia.edu>"));
    ck_assert(!rl_match("To *-voicemail record vm.example.org", "INVITE", "<sip:a@b.org>",
                        "<sip:bob@cs.columbia.edu>"));
    ck_assert(rl_match("From * b?b@example.org 404", "INVITE", "<sip:bob@example.org>", TO_BOB));
    ck_assert(!rl_match("From * b?b@example.org 404", "INVITE", "<sip:boob@example.org>",
                        TO_BOB));
    /* the method */
    ck_assert(rl_match("From INVITE * 404", "INVITE", "<sip:a@b.org>", TO_BOB));
    ck_assert(!rl_match("From INVITE * 404", "OPTIONS", "<sip:a@b.org>", TO_BOB));
    ck_assert(rl_match("From * * 404", "OPTIONS", "<sip:a@b.org>", TO_BOB));
    ck_assert(rl_match("To *.org 404", "MESSAGE", "<sip:a@b.org>", TO_BOB));
    /* another header, and the Request-URI */
    ck_assert(rl_match("Request-URI INVITE example.org 404", "INVITE", "<sip:a@b.net>", TO_BOB));
    ck_assert(!rl_match("Request-URI INVITE b.net 404", "INVITE", "<sip:a@b.net>", TO_BOB));
    ck_assert(!rl_match("Referred-By INVITE aol.com 404", "INVITE", "<sip:a@aol.com>", TO_BOB));
    ck_assert(rl_match("Referred-By INVITE * 404", "INVITE", "<sip:a@aol.com>", TO_BOB));
}
END_TEST

/* what a caller writes is text, never a pattern, and only the URI counts */
START_TEST(rules_hostile)
{
    ck_assert(!rl_match("From INVITE aol.com authenticate", "INVITE", "<sip:*@evil.net>",
                        TO_BOB));
    ck_assert(!rl_match("From INVITE aol.com authenticate", "INVITE", "<sip:x@aol.com.evil.net>",
                        TO_BOB));
    ck_assert(!rl_match("From INVITE aol.com authenticate", "INVITE",
                        "\"x@aol.com\" <sip:x@evil.net>", TO_BOB));
    ck_assert(!rl_match("From INVITE aol.com authenticate", "INVITE",
                        "<sip:x@evil.net;maddr=aol.com>", TO_BOB));
    ck_assert(!rl_match("From INVITE graduated@x.org 301 sip:a@b.org", "INVITE", TO_BOB,
                        "<sip:*@x.org>"));
    ck_assert(!rl_match("From INVITE graduated@x.org 301 sip:a@b.org", "INVITE", TO_BOB,
                        "<sip:[a-z]*@x.org>"));
    /* %-escapes are decoded before matching: no way around a rule */
    ck_assert(rl_match("To INVITE graduated@x.org 404", "INVITE", "<sip:a@b.org>",
                       "<sip:%67raduated@x.org>"));
    /* a SipRule has no condition: its section decides */
    ck_assert(sip_rule_matches(pool, rl_ok("respond 404"), rl_req("INVITE", "<sip:a@b>",
                                                                  TO_BOB)));
}
END_TEST

static Suite *rules_suite(void)
{
    Suite *s = suite_create("rules");
    TCase *tc = tcase_create("rules");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, rules_parse_actions);
    tcase_add_test(tc, rules_seed_table);
    tcase_add_test(tc, rules_file_errors);
    tcase_add_test(tc, rules_globs);
    tcase_add_test(tc, rules_hostile);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* name mapping (sip_namemap.c; seed 002 §5.2)                         */

/* the seed's table: every name in it answers for John Q. Public, "jqp" */
static const char *const nm_seed_rows[] = {
    "jqp", "John", "Public", "J.Q.Public", "John.Q.Public", "John_Public", "JohnPublic",
    "JPublic", "JohnQPublic", NULL
};

static int nm_has(const apr_array_header_t *a, const char *s)
{
    int i;

    for (i = 0; a && i < a->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(a, i, const char *), s))
            return 1;
    return 0;
}

/* the candidates as one string, "a b" */
static const char *nm_users(apr_array_header_t *u)
{
    return u ? apr_array_pstrcat(pool, u, ' ') : "(error)";
}

START_TEST(nm_forms_seed_table)
{
    apr_array_header_t *f = sip_namemap_forms(pool, "jqp", "John", "Q.", "Public");
    int i;
    const char *c;

    for (i = 0; nm_seed_rows[i]; i++)
        ck_assert_msg(nm_has(f, sip_str_lower(pool, nm_seed_rows[i])), "%s missing",
                      nm_seed_rows[i]);
    /* the symmetric ones */
    ck_assert(nm_has(f, "john.public"));
    ck_assert(nm_has(f, "j.public"));
    ck_assert(nm_has(f, "j_q_public"));
    ck_assert(nm_has(f, "jqpublic"));
    /* lower case, each once, nothing that is not a name of his */
    for (i = 0; i < f->nelts; i++) {
        const char *a = APR_ARRAY_IDX(f, i, const char *);
        int j;
        for (c = a; *c; c++)
            ck_assert(!apr_isupper(*c));
        for (j = i + 1; j < f->nelts; j++)
            ck_assert_str_ne(a, APR_ARRAY_IDX(f, j, const char *));
    }
    ck_assert(!nm_has(f, "q"));
    ck_assert(!nm_has(f, "q.public"));
    /* no middle name: no middle forms, and a full middle name gives its own */
    f = sip_namemap_forms(pool, "jd", "Jane", NULL, "Doe");
    ck_assert(nm_has(f, "jane.doe") && nm_has(f, "jdoe") && nm_has(f, "jd"));
    ck_assert_int_eq(f->nelts, 9);
    f = sip_namemap_forms(pool, "jqp", "John", "Quincy", "Public");
    ck_assert(nm_has(f, "john.quincy.public") && nm_has(f, "john.q.public"));
}
END_TEST

START_TEST(nm_file_every_row)
{
    const char *why = NULL;
    sip_namemap_t *m = sip_namemap_parse_file(pool, "names",
                                              "# the subscribers\n\n"
                                              "jqp   John Q. Public   # §5.2\n"
                                              "  mm\tMary Major\n", &why);
    int i;

    ck_assert_msg(m != NULL, "%s", why);
    for (i = 0; nm_seed_rows[i]; i++)
        ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, nm_seed_rows[i], &why)), "jqp");
    /* any case */
    ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, "JOHN.q.PUBLIC", &why)), "jqp");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, "mary.major", &why)), "mm");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, "Major", &why)), "mm");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, "nobody", &why)), "");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, "John.Major", &why)), "");
}
END_TEST

START_TEST(nm_file_two_johns)
{
    const char *why = NULL;
    sip_namemap_t *m = sip_namemap_parse_file(pool, "names", "jqp John Q Public\n"
                                              "jdoe John Doe\njdoe John Doe\n", &why);
    apr_array_header_t *u;

    ck_assert_ptr_nonnull(m);
    u = sip_namemap_lookup(m, pool, "John", &why);
    ck_assert_int_eq(u->nelts, 2);      /* jdoe's second line adds nothing */
    ck_assert(nm_has(u, "jqp") && nm_has(u, "jdoe"));
    ck_assert_int_eq(nm_decide("John", u), NM_ACT_MULTIPLE);
    u = sip_namemap_lookup(m, pool, "JDoe", &why);
    ck_assert_int_eq(nm_decide("JDoe", u), NM_ACT_RETARGET);
    u = sip_namemap_lookup(m, pool, "jdoe", &why);
    ck_assert_int_eq(nm_decide("jdoe", u), NM_ACT_PASS);    /* already the user's id */
    u = sip_namemap_lookup(m, pool, "bob", &why);
    ck_assert_int_eq(nm_decide("bob", u), NM_ACT_PASS);
}
END_TEST

START_TEST(nm_file_bad_lines)
{
    const char *why = NULL;

    ck_assert_ptr_null(sip_namemap_parse_file(pool, "names", "jqp John Q Public\nmary\n", &why));
    ck_assert_str_eq(why, "names:2: expected \"user First [Middle] Last\"");
    why = NULL;
    ck_assert_ptr_null(sip_namemap_parse_file(pool, "n", "# x\na b c d e\n", &why));
    ck_assert_ptr_nonnull(strstr(why, "n:2:"));
    why = NULL;
    ck_assert_ptr_null(sip_namemap_parse_file(pool, "n", "j@p John Public\n", &why));
    ck_assert_ptr_nonnull(strstr(why, "n:1: \"j@p\" is not a SIP user id"));
    ck_assert_ptr_nonnull(sip_namemap_parse_file(pool, "n", "", &why));
}
END_TEST

START_TEST(nm_decoding)
{
    const char *why = NULL;
    sip_namemap_t *m = sip_namemap_parse_file(pool, "n", "jqp John Q Public\n", &why);
    const char *d = sip_uri_user_decoded(pool, "John%2eQ%2EPublic");

    ck_assert_str_eq(d, "John.Q.Public");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(m, pool, d, &why)), "jqp");
    ck_assert_str_eq(sip_uri_user_decoded(pool, "%4a%4F%48%4e"), "JOHN");
    ck_assert_ptr_null(sip_uri_user_decoded(pool, "jo%zzhn"));
    ck_assert_ptr_null(sip_uri_user_decoded(pool, "jo%00hn"));
    ck_assert_ptr_null(sip_uri_user_decoded(pool, NULL));
}
END_TEST

START_TEST(nm_uri_with_user)
{
    const char *u = "sip:John.Q.Public@Example.org:5070;transport=tcp?Subject=hi";

    ck_assert_str_eq(sip_uri_with_user(pool, u, "jqp", 0),
                     "sip:jqp@Example.org:5070;transport=tcp?Subject=hi");
    ck_assert_str_eq(sip_uri_with_user(pool, u, "jqp", 1), "sip:jqp@Example.org:5070");
    ck_assert_str_eq(sip_uri_with_user(pool, "sips:a:pw@h", "b", 0), "sips:b@h");
    ck_assert_str_eq(sip_uri_with_user(pool, "sip:a@h", "j p", 1), "sip:j%20p@h");
    ck_assert_ptr_null(sip_uri_with_user(pool, "tel:+123", "b", 0));
}
END_TEST

START_TEST(nm_cache_expiry)
{
    sip_namemap_cache_t *c = sip_namemap_cache_create(pool, 3);
    apr_time_t t0 = apr_time_from_sec(1000000);
    apr_interval_time_t ttl = apr_time_from_sec(300);
    apr_array_header_t *u = NULL;

    sip_namemap_cache_put(c, "john", "jqp jdoe", t0, ttl);
    sip_namemap_cache_put(c, "nobody", "", t0, ttl);
    ck_assert(sip_namemap_cache_get(c, pool, "john", t0 + ttl - 1, &u));
    ck_assert_str_eq(nm_users(u), "jqp jdoe");
    ck_assert(sip_namemap_cache_get(c, pool, "nobody", t0, &u));   /* "none" is kept too */
    ck_assert_int_eq(u->nelts, 0);
    ck_assert(!sip_namemap_cache_get(c, pool, "john", t0 + ttl, &u));
    ck_assert(!sip_namemap_cache_get(c, pool, "mary", t0, &u));
    sip_namemap_cache_put(c, "mary", "mm", t0, 0);                 /* TTL 0: not kept */
    ck_assert(!sip_namemap_cache_get(c, pool, "mary", t0, &u));
    /* bounded: the fourth answer stored clears the three before it */
    sip_namemap_cache_put(c, "a", "x", t0, ttl);
    sip_namemap_cache_put(c, "b", "y", t0, ttl);
    ck_assert(sip_namemap_cache_get(c, pool, "b", t0, &u));
    ck_assert(!sip_namemap_cache_get(c, pool, "john", t0, &u));
    ck_assert(!sip_namemap_cache_get(c, pool, "a", t0, &u));
}
END_TEST

/* a directive of the main server (no mod_dbd here) */
static const char *nm_dir(sip_server_conf *c, const char *d, const char *a1, const char *a2,
                          const char *root)
{
    return sip_namemap_directive(pool, NULL, c, d, a1, a2, root);
}

START_TEST(nm_directives)
{
    sip_server_conf c;
    const char *why;
    char path[] = "/tmp/nm-unit-XXXXXX";
    int fd = mkstemp(path);
    apr_dbm_t *db;
    apr_datum_t k, v;

    memset(&c, 0, sizeof(c));
    ck_assert_str_eq(nm_dir(&c, "SipNameMapMultiple", "302", NULL, "/"),
                     "SipNameMapMultiple needs 300 (a Contact per candidate) or 404");
    ck_assert_ptr_null(nm_dir(&c, "SipNameMapMultiple", "404", NULL, "/"));
    ck_assert_int_eq(c.namemap_multiple, 404);
    ck_assert_ptr_nonnull(nm_dir(&c, "SipNameMapCacheTTL", "5s", NULL, "/"));
    ck_assert_ptr_null(nm_dir(&c, "SipNameMapCacheTTL", "60", NULL, "/"));
    ck_assert_int_eq(c.namemap_ttl, apr_time_from_sec(60));
    ck_assert_str_eq(nm_dir(&c, "SipNameMap", "dbd", "SELECT u FROM m WHERE n = %s", "/"),
                     "SipNameMap: dbd needs mod_dbd (LoadModule dbd_module before it)");
    ck_assert_str_eq(nm_dir(&c, "SipNameMap", "ldap", "x", "/"),
                     "SipNameMap: unknown source ldap (file, dbm, dbd or program)");
    ck_assert_str_eq(nm_dir(&c, "SipNameMap", "program", "", "/"),
                     "SipNameMap: program needs a command");
    why = nm_dir(&c, "SipNameMap", "program", "nm-no-such-mapper", "/tmp");
    ck_assert_ptr_nonnull(strstr(why, "/tmp/nm-no-such-mapper"));
    /* a file, relative to the server root, with a bad line */
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "jqp John Q Public\nx\n", 20), 20);
    close(fd);
    why = nm_dir(&c, "SipNameMap", "file", strrchr(path, '/') + 1, "/tmp");
    ck_assert_str_eq(why, apr_pstrcat(pool, "SipNameMap: ", path,
                                      ":2: expected \"user First [Middle] Last\"", NULL));
    ck_assert_ptr_null(c.namemap);
    /* dbm: a form in lower case -> users */
    ck_assert_int_eq(apr_dbm_open_ex(&db, "SDBM", path, APR_DBM_RWCREATE, APR_OS_DEFAULT, pool),
                     APR_SUCCESS);
    k.dptr = "john.q.public";
    k.dsize = strlen(k.dptr);
    v.dptr = "jqp";
    v.dsize = 3;
    ck_assert_int_eq(apr_dbm_store(db, k, v), APR_SUCCESS);
    k.dptr = "john";
    k.dsize = 4;
    v.dptr = "jqp, jdoe";      /* spaces or commas */
    v.dsize = 9;
    ck_assert_int_eq(apr_dbm_store(db, k, v), APR_SUCCESS);
    apr_dbm_close(db);
    ck_assert_ptr_null(nm_dir(&c, "SipNameMap", "dbm",
                                             apr_pstrcat(pool, "sdbm:", path, NULL), "/"));
    ck_assert_ptr_nonnull(c.namemap);
    ck_assert_str_eq(nm_users(sip_namemap_lookup(c.namemap, pool, "John.Q.Public", &why)), "jqp");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(c.namemap, pool, "JOHN", &why)), "jqp jdoe");
    ck_assert_str_eq(nm_users(sip_namemap_lookup(c.namemap, pool, "mary", &why)), "");
    unlink(path);
    unlink(apr_pstrcat(pool, path, ".pag", NULL));
    unlink(apr_pstrcat(pool, path, ".dir", NULL));
    ck_assert_ptr_nonnull(nm_dir(&c, "SipNameMap", "dbm",
                                                apr_pstrcat(pool, "sdbm:", path, NULL), "/"));
}
END_TEST

static Suite *namemap_suite(void)
{
    Suite *s = suite_create("namemap");
    TCase *tc = tcase_create("namemap");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, nm_forms_seed_table);
    tcase_add_test(tc, nm_file_every_row);
    tcase_add_test(tc, nm_file_two_johns);
    tcase_add_test(tc, nm_file_bad_lines);
    tcase_add_test(tc, nm_decoding);
    tcase_add_test(tc, nm_uri_with_user);
    tcase_add_test(tc, nm_cache_expiry);
    tcase_add_test(tc, nm_directives);
    suite_add_tcase(s, tc);
    return s;
}

/* ================================================================== */
/* lists (sip_lists.c) and forwarding files (sip_forward.c)            */

static sip_lists_t *lists_of(const char *text)
{
    sip_lists_t *l = NULL;
    const char *why = sip_lists_parse(pool, &l, "t.lists", text);

    ck_assert_msg(why == NULL, "%s", why ? why : "");
    return l;
}

START_TEST(lists_find_names)
{
    sip_lists_t *l = lists_of("team sip:a@x.test bob\nsales@Example.COM sip:s@x.test\n");
    const apr_array_header_t *m;

    m = sip_lists_find(pool, l, "team", "anything.test");
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(m->nelts, 2);
    ck_assert_str_eq(APR_ARRAY_IDX(m, 0, const char *), "sip:a@x.test");
    ck_assert_str_eq(APR_ARRAY_IDX(m, 1, const char *), "bob");
    /* case-insensitive after %-decoding (seed 002 §5.2) */
    ck_assert_ptr_nonnull(sip_lists_find(pool, l, "Te%61M", "h.test"));
    ck_assert_ptr_null(sip_lists_find(pool, l, "te%00am", "h.test"));
    ck_assert_ptr_null(sip_lists_find(pool, l, "teams", "h.test"));
    ck_assert_ptr_null(sip_lists_find(pool, l, "", "h.test"));
    ck_assert_ptr_null(sip_lists_find(pool, l, NULL, "h.test"));
    /* user@host only at that host, whatever its case */
    ck_assert_ptr_nonnull(sip_lists_find(pool, l, "sales", "example.com"));
    ck_assert_ptr_nonnull(sip_lists_find(pool, l, "SALES", "EXAMPLE.com"));
    ck_assert_ptr_null(sip_lists_find(pool, l, "sales", "other.example.com"));
    ck_assert_ptr_null(sip_lists_find(pool, NULL, "team", "h.test"));
}
END_TEST

START_TEST(lists_config_errors)
{
    sip_lists_t *l = NULL;
    const char *one[] = {"sip:a@x.test"};
    const char *why;

    ck_assert_ptr_null(sip_lists_add(pool, &l, "team", 1, one, "a.conf:1"));
    why = sip_lists_add(pool, &l, "TEAM", 1, one, "a.conf:9");
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "defined twice (first at a.conf:1)"));
    ck_assert_ptr_nonnull(sip_lists_add(pool, &l, "a b", 1, one, "x"));
    ck_assert_ptr_nonnull(sip_lists_add(pool, &l, "@host", 1, one, "x"));
    ck_assert_ptr_nonnull(sip_lists_add(pool, &l, "user@", 1, one, "x"));
    ck_assert_ptr_nonnull(sip_lists_add(pool, &l, "u@h@h", 1, one, "x"));
    ck_assert_ptr_nonnull(sip_lists_add(pool, &l, "x%2Fy", 1, one, "x"));
    ck_assert_ptr_nonnull(sip_lists_add(pool, &l, "empty", 0, one, "x"));
    why = sip_lists_parse(pool, &l, "f.txt", "# c\n\nok sip:o@x.test # trailing\nlonely\n");
    ck_assert_ptr_nonnull(why);
    ck_assert_str_eq(why, "f.txt:4: list lonely has no members");
    why = sip_lists_parse(pool, &l, "g.txt", "x1 sip:a@x.test\nx2 tel:+1234\n");
    ck_assert_str_eq(why, "g.txt:2: list x2: tel:+1234 is not a SIP URI");
    why = sip_lists_parse(pool, &l, "h.txt", "x3 sip:a@x.test bad<name\n");
    ck_assert_ptr_nonnull(strstr(why, "h.txt:1: list x3: bad<name is not a user name"));
    /* what parsed before the error is there; the comment did not count */
    ck_assert_ptr_nonnull(sip_lists_find(pool, l, "ok", "h"));
    ck_assert_int_eq(sip_lists_find(pool, l, "ok", "h")->nelts, 1);
}
END_TEST

START_TEST(lists_members)
{
    const char *why = NULL;

    ck_assert_str_eq(sip_lists_member_parse(pool, "sip:a@x.test;transport=tcp", &why),
                     "sip:a@x.test;transport=tcp");
    ck_assert_str_eq(sip_lists_member_parse(pool, "SIPS:a@x.test", &why), "SIPS:a@x.test");
    ck_assert_str_eq(sip_lists_member_parse(pool, "a@x.test", &why), "sip:a@x.test");
    ck_assert_str_eq(sip_lists_member_parse(pool, "bob.smith", &why), "bob.smith");
    ck_assert_ptr_null(sip_lists_member_parse(pool, "tel:+1", &why));
    ck_assert_ptr_null(sip_lists_member_parse(pool, "sip:", &why));
    ck_assert_ptr_null(sip_lists_member_parse(pool, "sip:a@x.test>", &why));
    ck_assert_ptr_null(sip_lists_member_parse(pool, "a b", &why));
    ck_assert_ptr_nonnull(why);
    /* a bare user is at the Request-URI's host and port, same scheme */
    ck_assert_str_eq(sip_lists_member_uri(pool, "bob", "sip:team@example.com:5070"),
                     "sip:bob@example.com:5070");
    ck_assert_str_eq(sip_lists_member_uri(pool, "bob", "sips:team@example.com"),
                     "sips:bob@example.com");
    ck_assert_str_eq(sip_lists_member_uri(pool, "sip:a@x.test", "sip:team@example.com"),
                     "sip:a@x.test");
    ck_assert_str_eq(sip_lists_member_uri(pool, "bob", "sip:team@[2001:db8::1]:5070"),
                     "sip:bob@[2001:db8::1]:5070");
    ck_assert_ptr_null(sip_lists_member_uri(pool, "bob", "garbage"));
}
END_TEST

START_TEST(lists_max_and_merge)
{
    sip_lists_t *base = lists_of("a sip:1@x.test sip:2@x.test sip:3@x.test\nb sip:b@x.test\n");
    sip_lists_t *add = lists_of("a sip:9@x.test\nc sip:c@x.test\n"), *m;
    const char *why = sip_lists_check(pool, base, 2);

    ck_assert_ptr_nonnull(why);
    ck_assert_str_eq(why, "t.lists:1: list a has 3 members, more than SipListMaxMembers 2");
    ck_assert_ptr_null(sip_lists_check(pool, base, 3));
    ck_assert_ptr_null(sip_lists_check(pool, NULL, 1));
    m = sip_lists_merge(pool, base, add);
    /* the vhost's own list wins on a name; the others are inherited */
    ck_assert_int_eq(sip_lists_find(pool, m, "a", "h")->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(sip_lists_find(pool, m, "a", "h"), 0, const char *),
                     "sip:9@x.test");
    ck_assert_ptr_nonnull(sip_lists_find(pool, m, "b", "h"));
    ck_assert_ptr_nonnull(sip_lists_find(pool, m, "c", "h"));
    /* the overridden list is not checked any more */
    ck_assert_ptr_null(sip_lists_check(pool, m, 2));
    ck_assert_ptr_eq(sip_lists_merge(pool, NULL, add), add);
    ck_assert_ptr_eq(sip_lists_merge(pool, base, NULL), base);
}
END_TEST

START_TEST(lists_disposition)
{
    ck_assert(sip_lists_disposition_all("all"));
    ck_assert(sip_lists_disposition_all("ALL"));
    ck_assert(sip_lists_disposition_all(" no-forward , All "));
    ck_assert(sip_lists_disposition_all("all;x=1"));
    ck_assert(sip_lists_disposition_all("queue,all"));
    ck_assert(!sip_lists_disposition_all("allx"));
    ck_assert(!sip_lists_disposition_all("small"));
    ck_assert(!sip_lists_disposition_all("queue, no-forward"));
    ck_assert(!sip_lists_disposition_all("x;all"));
    ck_assert(!sip_lists_disposition_all(""));
    ck_assert(!sip_lists_disposition_all(NULL));
}
END_TEST

START_TEST(lists_load_file)
{
    char dir[] = "/tmp/lists_unit_XXXXXX", path[64];
    sip_lists_t *l = NULL;
    FILE *f;
    const char *why;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/l.txt", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("# staff\nstaff sip:a@x.test\tsip:b@x.test\r\n", f);
    fclose(f);
    ck_assert_ptr_null(sip_lists_load(pool, &l, path));
    ck_assert_int_eq(sip_lists_find(pool, l, "staff", "h")->nelts, 2);
    unlink(path);
    why = sip_lists_load(pool, &l, path);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, path));
    rmdir(dir);
}
END_TEST

static Suite *lists_suite(void)
{
    Suite *s = suite_create("lists");
    TCase *tc = tcase_create("lists");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, lists_find_names);
    tcase_add_test(tc, lists_config_errors);
    tcase_add_test(tc, lists_members);
    tcase_add_test(tc, lists_max_and_merge);
    tcase_add_test(tc, lists_disposition);
    tcase_add_test(tc, lists_load_file);
    suite_add_tcase(s, tc);
    return s;
}

START_TEST(forward_parse)
{
    const char *why = NULL;
    sip_forward_t *fw;
    const char *text = "# away\nJ.Public@new.example, sip:jp@ieee.example\n  bob  # local\n";

    fw = sip_forward_parse(pool, text, strlen(text), &why);
    ck_assert_ptr_nonnull(fw);
    ck_assert_ptr_null(fw->argv);
    ck_assert_int_eq(fw->addresses->nelts, 3);
    ck_assert_str_eq(APR_ARRAY_IDX(fw->addresses, 0, const char *), "sip:J.Public@new.example");
    ck_assert_str_eq(APR_ARRAY_IDX(fw->addresses, 1, const char *), "sip:jp@ieee.example");
    ck_assert_str_eq(APR_ARRAY_IDX(fw->addresses, 2, const char *), "bob");
    text = "# vacation\n  |/usr/local/sipd/vacation js  now\n";
    fw = sip_forward_parse(pool, text, strlen(text), &why);
    ck_assert_ptr_nonnull(fw);
    ck_assert_str_eq(fw->argv[0], "/usr/local/sipd/vacation");
    ck_assert_str_eq(fw->argv[1], "js");
    ck_assert_str_eq(fw->argv[2], "now");
    ck_assert_ptr_null(fw->argv[3]);
    text = "|/bin/prog\nsip:a@x.test\n";
    ck_assert_ptr_null(sip_forward_parse(pool, text, strlen(text), &why));
    ck_assert_str_eq(why, "a |program line must be the only entry");
    text = "|/bin/a\n|/bin/b\n";
    ck_assert_ptr_null(sip_forward_parse(pool, text, strlen(text), &why));
    text = "|prog\n";
    ck_assert_ptr_null(sip_forward_parse(pool, text, strlen(text), &why));
    ck_assert_str_eq(why, "|program needs an absolute path");
    text = "|\n";
    ck_assert_ptr_null(sip_forward_parse(pool, text, strlen(text), &why));
    text = "# nothing\n\n";
    ck_assert_ptr_null(sip_forward_parse(pool, text, strlen(text), &why));
    ck_assert_str_eq(why, "no address in it");
    ck_assert_ptr_null(sip_forward_parse(pool, "sip:a@x.test\0x", 14, &why));
    ck_assert_str_eq(why, "the file holds a NUL byte");
    text = "mailto:a@x.test\n";
    ck_assert_ptr_null(sip_forward_parse(pool, text, strlen(text), &why));
}
END_TEST

START_TEST(forward_paths)
{
    const char *why = NULL, *path;
    long uid;
    int home;

    path = sip_forward_path(pool, "/srv/fwd/%u.sip", "alice", &uid, &home, &why);
    ck_assert_str_eq(path, "/srv/fwd/alice.sip");
    ck_assert_int_eq(home, 0);
    path = sip_forward_path(pool, "/srv/%u/%%u/%u", "b%6Fb", &uid, &home, &why);
    ck_assert_str_eq(path, "/srv/bob/%u/bob");
    /* names that are no safe file name (SIP-CGI's rules, and no "..") */
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", "..", &uid, &home, &why));
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", ".hidden", &uid, &home, &why));
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", "a..b", &uid, &home, &why));
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", "a%2Fb", &uid, &home, &why));
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", "a%00b", &uid, &home, &why));
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", "", &uid, &home, &why));
    ck_assert_ptr_null(sip_forward_path(pool, "/srv/%u", NULL, &uid, &home, &why));
    ck_assert_str_eq(why, "the user name is not a safe file name");
    /* ~/: the system user's home; the file must be that user's */
    path = sip_forward_path(pool, "~/.sipforward", "root", &uid, &home, &why);
    ck_assert_ptr_nonnull(path);
    ck_assert_str_eq(path, apr_pstrcat(pool, getpwnam("root")->pw_dir, "/.sipforward", NULL));
    ck_assert_int_eq(home, 1);
    ck_assert_int_eq(uid, 0);
    ck_assert_ptr_null(sip_forward_path(pool, "~/.sipforward", "no-such-user-xyz", &uid, &home,
                                        &why));
    ck_assert_str_eq(why, "no system user of that name");
}
END_TEST

static char fwd_dir[] = "/tmp/fwd_unit_XXXXXX";

static const char *fwd_put(const char *name, const char *text, size_t len, mode_t mode)
{
    const char *path = apr_pstrcat(pool, fwd_dir, "/", name, NULL);
    FILE *f;

    unlink(path);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

static int fwd_read(const char *path, long owner, const char **why)
{
    sip_forward_t *fw = NULL;
    long owners[1] = {owner};

    *why = NULL;
    return sip_forward_read(pool, path, owners, 1, &fw, why);
}

START_TEST(forward_safety)
{
    const char *good = "sip:a@x.test\n", *why, *p;
    long me = (long)geteuid();
    sip_forward_t *fw = NULL;
    long owners[2] = {-1, me};
    char *big = apr_palloc(pool, 70000);

    ck_assert_ptr_nonnull(mkdtemp(fwd_dir));
    ck_assert_int_eq(chmod(fwd_dir, 0755), 0);
    p = fwd_put("ok", good, strlen(good), 0644);
    ck_assert_int_eq(sip_forward_read(pool, p, owners, 2, &fw, &why), 0);
    ck_assert_int_eq(fw->addresses->nelts, 1);
    ck_assert_int_eq((long)fw->owner, me);
    ck_assert_int_eq(fwd_read(apr_pstrcat(pool, fwd_dir, "/absent", NULL), me, &why), -1);
    /* someone else's */
    ck_assert_int_eq(fwd_read(p, me + 1, &why), 1);
    ck_assert_ptr_nonnull(strstr(why, "not by its user"));
    /* writable by group, by others */
    p = fwd_put("grp", good, strlen(good), 0664);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "it is writable by group or others");
    p = fwd_put("oth", good, strlen(good), 0646);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "it is writable by group or others");
    /* a symlink, even to a good file */
    p = apr_pstrcat(pool, fwd_dir, "/link", NULL);
    ck_assert_int_eq(symlink(apr_pstrcat(pool, fwd_dir, "/ok", NULL), p), 0);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "it is a symbolic link");
    unlink(p);
    /* too big; exactly 64 KiB is fine */
    memset(big, '#', 70000);
    p = fwd_put("big", big, 70000, 0644);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "it is larger than 64 KiB");
    memcpy(big + SIP_FORWARD_MAX_SIZE - strlen(good) - 1, "\n", 1);
    memcpy(big + SIP_FORWARD_MAX_SIZE - strlen(good), good, strlen(good));
    p = fwd_put("big", big, SIP_FORWARD_MAX_SIZE, 0644);
    ck_assert_int_eq(fwd_read(p, me, &why), 0);
    unlink(p);
    /* not a regular file */
    p = apr_pstrcat(pool, fwd_dir, "/fifo", NULL);
    ck_assert_int_eq(mkfifo(p, 0644), 0);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "it is not a regular file");
    unlink(p);
    /* a malformed file is refused with the reason */
    p = fwd_put("bad", "|relative\n", 10, 0644);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "|program needs an absolute path");
    unlink(p);
    /* its directory writable by group */
    ck_assert_int_eq(chmod(fwd_dir, 0775), 0);
    p = apr_pstrcat(pool, fwd_dir, "/ok", NULL);
    ck_assert_int_eq(fwd_read(p, me, &why), 1);
    ck_assert_str_eq(why, "its directory is writable by group or others");
    ck_assert_int_eq(chmod(fwd_dir, 0755), 0);
    unlink(p);
    unlink(apr_pstrcat(pool, fwd_dir, "/grp", NULL));
    unlink(apr_pstrcat(pool, fwd_dir, "/oth", NULL));
    ck_assert_int_eq(rmdir(fwd_dir), 0);
}
END_TEST

START_TEST(forward_program_owner)
{
    sip_server_conf conf;
    sip_forward_t fw;
    const char *argv[] = {"/bin/sh", NULL};
    const char *why;
    int as_owner = -1;

    memset(&conf, 0, sizeof(conf));
    conf.forward_file = "~/.sipforward";
    conf.forward_min_uid = -1;
    memset(&fw, 0, sizeof(fw));
    fw.argv = argv;
    /* a file of root: never run, as root or as anyone */
    fw.owner = 0;
    why = fwd_program_refused(pool, &conf, "/root/.sipforward", &fw, &as_owner);
    ck_assert_int_eq(as_owner, 1);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "it would run as root"));
    /* uid 1 (daemon): a system account, below SipForwardMinUid's 1000 */
    fw.owner = 1;
    why = fwd_program_refused(pool, &conf, "/usr/sbin/.sipforward", &fw, &as_owner);
    ck_assert_int_eq(as_owner, 1);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "below the minimum"));
    /* ... unless the minimum is lowered to it: then the file must be where
     * SipForwardFile puts that user's */
    conf.forward_min_uid = 1;
    why = fwd_program_refused(pool, &conf, "/elsewhere/.sipforward", &fw, &as_owner);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "is not its owner's"));
    if (geteuid() != 0) {
        /* httpd's own file: run as httpd, as before */
        fw.owner = geteuid();
        ck_assert_ptr_null(fwd_program_refused(pool, &conf, "/x", &fw, &as_owner));
        ck_assert_int_eq(as_owner, 0);
        argv[0] = "/nonexistent/prog";
        ck_assert_ptr_nonnull(strstr(fwd_program_refused(pool, &conf, "/x", &fw, &as_owner),
                                     "not an executable"));
    }
}
END_TEST

START_TEST(forward_min_uid)
{
    sip_server_conf conf;
    long n = -1;

    memset(&conf, 0, sizeof(conf));
    conf.forward_min_uid = -1;
    ck_assert_int_eq(sip_forward_min_uid(&conf), 1000);
    ck_assert_ptr_null(sip_forward_min_uid_parse("500", &n));
    ck_assert_int_eq(n, 500);
    conf.forward_min_uid = n;
    ck_assert_int_eq(sip_forward_min_uid(&conf), 500);
    ck_assert_ptr_nonnull(sip_forward_min_uid_parse("0", &n));
    ck_assert_ptr_nonnull(sip_forward_min_uid_parse("-5", &n));
    ck_assert_ptr_nonnull(sip_forward_min_uid_parse("10x", &n));
    ck_assert_ptr_nonnull(sip_forward_min_uid_parse("", &n));
    ck_assert_ptr_nonnull(sip_forward_min_uid_parse("99999999999", &n));
    ck_assert_int_eq(n, 500);
}
END_TEST

static Suite *forward_suite(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("forward");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, forward_parse);
    tcase_add_test(tc, forward_paths);
    tcase_add_test(tc, forward_safety);
    tcase_add_test(tc, forward_program_owner);
    tcase_add_test(tc, forward_min_uid);
    suite_add_tcase(s, tc);
    return s;
}

/* ------------------------------------------------------------------ */
/* forwarding files' |program as the owner: the pure checks both the
 * engine and sip-suexec --owner make (sip_fwd_owner.h)               */
/* ------------------------------------------------------------------ */

static struct stat fo_st(mode_t mode, uid_t uid)
{
    struct stat st;

    memset(&st, 0, sizeof(st));
    st.st_mode = mode;
    st.st_uid = uid;
    return st;
}

START_TEST(fwd_owner_uid)
{
    ck_assert_ptr_null(sip_fwd_owner_uid_check(1000, 1000, 1000));
    ck_assert_ptr_null(sip_fwd_owner_uid_check(5000, 100, 1000));
    ck_assert_str_eq(sip_fwd_owner_uid_check(0, 1000, 1000), "it would run as root");
    ck_assert_str_eq(sip_fwd_owner_uid_check(1000, 0, 1000), "it would run as root");
    /* even with a minimum of 0 or below */
    ck_assert_str_eq(sip_fwd_owner_uid_check(0, 0, 0), "it would run as root");
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_uid_check(999, 999, 1000), "below the minimum"));
    ck_assert_ptr_nonnull(sip_fwd_owner_uid_check(5, 5, 0));
    ck_assert_ptr_null(sip_fwd_owner_uid_check(5, 5, 1));
}
END_TEST

START_TEST(fwd_owner_paths)
{
    char buf[64];

    ck_assert(sip_fwd_owner_path_clean("/home/bob/.sipforward"));
    ck_assert(sip_fwd_owner_path_clean("/home/bob/bin/vac.sh"));
    ck_assert(sip_fwd_owner_path_clean("/a/..b/c."));
    ck_assert(!sip_fwd_owner_path_clean("home/bob"));
    ck_assert(!sip_fwd_owner_path_clean("/"));
    ck_assert(!sip_fwd_owner_path_clean("/home/bob/"));
    ck_assert(!sip_fwd_owner_path_clean("/home//bob"));
    ck_assert(!sip_fwd_owner_path_clean("/home/./bob"));
    ck_assert(!sip_fwd_owner_path_clean("/home/bob/.."));
    ck_assert(!sip_fwd_owner_path_clean("/home/../root/x"));
    ck_assert(!sip_fwd_owner_path_clean("/home/bob/."));
    ck_assert(!sip_fwd_owner_path_clean("/home/b\nob"));

    ck_assert(sip_fwd_owner_expand(buf, sizeof(buf), "~/.sipforward", "bob", "/home/bob"));
    ck_assert_str_eq(buf, "/home/bob/.sipforward");
    ck_assert(sip_fwd_owner_expand(buf, sizeof(buf), "/etc/fwd/%u.%%", "bob", NULL));
    ck_assert_str_eq(buf, "/etc/fwd/bob.%");
    ck_assert(sip_fwd_owner_expand(buf, sizeof(buf), "/etc/%u/%u", "bob", "/home/bob"));
    ck_assert_str_eq(buf, "/etc/bob/bob");
    ck_assert(!sip_fwd_owner_expand(buf, sizeof(buf), "~/.sipforward", "bob", "relative"));
    ck_assert(!sip_fwd_owner_expand(buf, sizeof(buf), "/etc/fwd/all", "bob", "/home/bob"));
    ck_assert(!sip_fwd_owner_expand(buf, sizeof(buf), "fwd/%u", "bob", "/home/bob"));
    ck_assert(!sip_fwd_owner_expand(buf, 12, "/etc/fwd/%u", "bobbybobby", NULL));
    ck_assert(!sip_fwd_owner_expand(buf, 12, "~/.sipforward", "bob", "/home/bob"));

    ck_assert(sip_fwd_owner_template_dir(buf, sizeof(buf), "/etc/mod_sip/forward/%u"));
    ck_assert_str_eq(buf, "/etc/mod_sip/forward");
    ck_assert(sip_fwd_owner_template_dir(buf, sizeof(buf), "/srv/fwd/%u/sip"));
    ck_assert_str_eq(buf, "/srv/fwd");
    ck_assert(sip_fwd_owner_template_dir(buf, sizeof(buf), "/srv/fwd/x-%u"));
    ck_assert_str_eq(buf, "/srv/fwd");
    ck_assert(sip_fwd_owner_template_dir(buf, sizeof(buf), "/%u"));
    ck_assert_str_eq(buf, "/");
    ck_assert(!sip_fwd_owner_template_dir(buf, sizeof(buf), "~/.sipforward"));
    ck_assert(!sip_fwd_owner_template_dir(buf, 4, "/etc/mod_sip/%u"));
}
END_TEST

START_TEST(fwd_owner_modes)
{
    struct stat st;

    st = fo_st(S_IFREG | 0644, 1000);
    ck_assert_ptr_null(sip_fwd_owner_file_check(&st, 1000));
    st = fo_st(S_IFREG | 0600, 1000);
    ck_assert_ptr_null(sip_fwd_owner_file_check(&st, 1000));
    st = fo_st(S_IFLNK | 0777, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_file_check(&st, 1000), "symbolic link"));
    st = fo_st(S_IFDIR | 0755, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_file_check(&st, 1000), "not a regular"));
    st = fo_st(S_IFREG | 0644, 1001);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_file_check(&st, 1000), "not the owner's"));
    /* a root-owned file is not the owner's either: root wrote the program */
    st = fo_st(S_IFREG | 0644, 0);
    ck_assert_ptr_nonnull(sip_fwd_owner_file_check(&st, 1000));
    st = fo_st(S_IFREG | 0664, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_file_check(&st, 1000), "writable by group"));
    st = fo_st(S_IFREG | 0646, 1000);
    ck_assert_ptr_nonnull(sip_fwd_owner_file_check(&st, 1000));

    st = fo_st(S_IFDIR | 0755, 1000);
    ck_assert_ptr_null(sip_fwd_owner_dir_check(&st, 1000));
    st = fo_st(S_IFDIR | 0755, 0);
    ck_assert_ptr_null(sip_fwd_owner_dir_check(&st, 1000));
    st = fo_st(S_IFDIR | 0755, 1001);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_dir_check(&st, 1000), "someone else"));
    st = fo_st(S_IFDIR | 01777, 0);         /* /tmp */
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_dir_check(&st, 1000), "writable by group"));
    st = fo_st(S_IFDIR | 0775, 1000);
    ck_assert_ptr_nonnull(sip_fwd_owner_dir_check(&st, 1000));
    st = fo_st(S_IFREG | 0755, 1000);
    ck_assert_ptr_nonnull(sip_fwd_owner_dir_check(&st, 1000));

    st = fo_st(S_IFREG | 0755, 1000);
    ck_assert_ptr_null(sip_fwd_owner_program_check(&st, 1000));
    st = fo_st(S_IFREG | 0755, 0);          /* /usr/bin's */
    ck_assert_ptr_null(sip_fwd_owner_program_check(&st, 1000));
    st = fo_st(S_IFREG | 0700, 1000);
    ck_assert_ptr_null(sip_fwd_owner_program_check(&st, 1000));
    st = fo_st(S_IFLNK | 0777, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "symbolic link"));
    st = fo_st(S_IFREG | 0755, 1001);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "someone else"));
    st = fo_st(S_IFREG | 0775, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "writable by group"));
    st = fo_st(S_IFREG | 0757, 1000);
    ck_assert_ptr_nonnull(sip_fwd_owner_program_check(&st, 1000));
    st = fo_st(S_IFREG | 04755, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "setuid"));
    st = fo_st(S_IFREG | 02755, 0);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "setgid"));
    st = fo_st(S_IFREG | 0644, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "not executable"));
    st = fo_st(S_IFDIR | 0755, 1000);
    ck_assert_ptr_nonnull(strstr(sip_fwd_owner_program_check(&st, 1000), "not a regular"));
}
END_TEST

/* The helper's reading of a file agrees with sip_forward_parse's. */
static int fo_line(const char *text, char **argv, const char **why)
{
    return sip_fwd_owner_program_line(apr_pstrdup(pool, text), argv, why);
}

START_TEST(fwd_owner_program_line)
{
    static const char *const bad[] = {
        "|relative arg\n", "|\n", "|  \n", "sip:a@b\n|/bin/prog\n", "|/bin/prog\nbob\n",
        "|/bin/a\n|/bin/b\n", "# nothing\n", "", "a@b, c@d\n", NULL};
    char *argv[SIP_FWD_OWNER_MAX_ARGS + 1];
    const char *why = NULL;
    char many[512] = "|/bin/prog";
    int i;

    ck_assert_int_eq(fo_line("# away\n  |/usr/local/bin/vac away  monday # comment\n, ,\n",
                             argv, &why), 3);
    ck_assert_str_eq(argv[0], "/usr/local/bin/vac");
    ck_assert_str_eq(argv[1], "away");
    ck_assert_str_eq(argv[2], "monday");
    ck_assert_ptr_null(argv[3]);
    ck_assert_int_eq(fo_line("|/bin/prog\r\n", argv, &why), 1);
    ck_assert_str_eq(argv[0], "/bin/prog");
    for (i = 0; bad[i]; i++) {
        sip_forward_t *fw;
        const char *why2 = NULL;
        why = NULL;
        ck_assert_msg(fo_line(bad[i], argv, &why) == 0, "accepted: %s", bad[i]);
        ck_assert_ptr_nonnull(why);
        /* the engine's parser does not run a program from it either */
        fw = sip_forward_parse(pool, bad[i], strlen(bad[i]), &why2);
        ck_assert_msg(!fw || !fw->argv, "engine runs: %s", bad[i]);
    }
    for (i = 0; i < SIP_FWD_OWNER_MAX_ARGS; i++)
        strcat(many, " x");
    ck_assert_int_eq(fo_line(many, argv, &why), 0);
    ck_assert_str_eq(why, "too many words on the |program line");
}
END_TEST

START_TEST(fwd_owner_env)
{
    static const char *const ok[] = {
        "GATEWAY_INTERFACE=SIP-CGI/1.1", "REQUEST_METHOD=INVITE", "REQUEST_URI=sip:a@b",
        "REMOTE_ADDR=127.0.0.1", "SIP_FROM=<sip:x@y>;tag=1", "SIP_CALL_ID=abc", "SERVER_PORT=5060",
        "REGISTRATIONS=", "CONTENT_TYPE=application/sdp", "RESPONSE_TOKEN=t", NULL};
    static const char *const no[] = {
        "PATH=/tmp", "LD_PRELOAD=/tmp/x.so", "LD_LIBRARY_PATH=/tmp", "IFS= ", "HOME=/root",
        "BASH_ENV=/tmp/x", "ENV=/tmp/x", "PERL5LIB=/tmp", "PYTHONPATH=/tmp", "SIP_=x",
        "SIP", "=x", "sip_from=x", "REQUEST_METHODX=1", "REQUEST_METHO=1", "TZ=:/tmp/x",
        "SHELLOPTS=xtrace", NULL};
    int i;

    for (i = 0; ok[i]; i++)
        ck_assert_msg(sip_fwd_owner_env_ok(ok[i]), "dropped: %s", ok[i]);
    for (i = 0; no[i]; i++)
        ck_assert_msg(!sip_fwd_owner_env_ok(no[i]), "kept: %s", no[i]);
}
END_TEST

static Suite *fwd_owner_suite(void)
{
    Suite *s = suite_create("fwd_owner");
    TCase *tc = tcase_create("fwd_owner");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, fwd_owner_uid);
    tcase_add_test(tc, fwd_owner_paths);
    tcase_add_test(tc, fwd_owner_modes);
    tcase_add_test(tc, fwd_owner_program_line);
    tcase_add_test(tc, fwd_owner_env);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- flows (RFC 5626 §5.3, RFC 7118 §5): sip_binding_reach, flow tokens ---- */

static sip_reach_t reach_of(const char *contact, int transport, int open)
{
    sip_binding_t b;

    memset(&b, 0, sizeof(b));
    b.contact = contact;
    b.transport = transport;
    b.flow = 42;
    return sip_binding_reach(pool, &b, open);
}

START_TEST(flows_reach_policy)
{
    /* WebSocket: only over the flow (its Contact host is made up) */
    ck_assert_int_eq(reach_of("sip:x@abc.invalid;transport=ws", SIP_TP_WS, 1), SIP_REACH_FLOW);
    ck_assert_int_eq(reach_of("sip:x@abc.invalid;transport=ws", SIP_TP_WS, 0), SIP_REACH_NONE);
    ck_assert_int_eq(reach_of("sip:x@abc.invalid", SIP_TP_WSS, 0), SIP_REACH_NONE);
    /* lenient: a browser that left out ;transport=ws is still reached */
    ck_assert_int_eq(reach_of("sip:x@abc.invalid", SIP_TP_WSS, 1), SIP_REACH_FLOW);
    /* TLS: the flow, nothing once it closed */
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1:5061;transport=tls", SIP_TP_TLS, 1), SIP_REACH_FLOW);
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1:5061;transport=tls", SIP_TP_TLS, 0), SIP_REACH_NONE);
    /* TCP: the flow while open; then the Contact, unless ;ob */
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1;transport=tcp", SIP_TP_TCP, 1), SIP_REACH_FLOW);
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1", SIP_TP_TCP, 1), SIP_REACH_FLOW);
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1;transport=tcp", SIP_TP_TCP, 0), SIP_REACH_CONTACT);
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1;transport=TCP;ob", SIP_TP_TCP, 0), SIP_REACH_NONE);
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1;ob", SIP_TP_TCP, 1), SIP_REACH_FLOW);
    /* a Contact naming another transport is honoured */
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1;transport=udp", SIP_TP_TCP, 1), SIP_REACH_CONTACT);
    /* UDP: the Contact, except a WebSocket one (a binding without its flow) */
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1", SIP_TP_UDP, 0), SIP_REACH_CONTACT);
    ck_assert_int_eq(reach_of("sip:x@10.0.0.1;ob", SIP_TP_UDP, 0), SIP_REACH_CONTACT);
    ck_assert_int_eq(reach_of("sip:x@abc.invalid;transport=ws", SIP_TP_UDP, 0), SIP_REACH_NONE);
}
END_TEST

START_TEST(flows_route_token)
{
    const char *v, *plain;
    apr_uint64_t id = APR_UINT64_C(0xfedcba9876543210);

    sip_route_set_secret(RS_SECRET, strlen(RS_SECRET));
    v = apr_pstrcat(pool, "<", sip_route_uri_flow(pool, "127.0.0.1:5060", "ws", "cid@x", "ft1", id),
                    ">", NULL);
    ck_assert_ptr_nonnull(strstr(v, ";transport=ws;flow=fedcba9876543210;lr;ftag=ft1;rs="));
    ck_assert_int_eq(sip_route_verify(pool, v, "cid@x", "ft1", NULL), 1);
    /* the whole 64 bits come back (the top bit set: unsigned parse) */
    ck_assert(sip_route_flow(pool, v) == id);
    /* the flow is covered by rs: another connection's id does not verify */
    {
        char *forged = apr_pstrdup(pool, v);
        char *f = strstr(forged, "flow=") + 5;
        f[15] = f[15] == '0' ? '1' : '0';
        ck_assert_int_eq(sip_route_verify(pool, forged, "cid@x", "ft1", NULL), 0);
        /* dropping it does not verify either */
        ck_assert_int_eq(sip_route_verify(pool, apr_pstrcat(pool, "<sip:127.0.0.1:5060;transport=ws;lr;ftag=ft1;rs=",
                                                            strstr(v, "rs=") + 3, NULL),
                                          "cid@x", "ft1", NULL), 0);
    }
    /* no flow: the value is the one sip_route_uri always made */
    plain = sip_route_uri_flow(pool, "127.0.0.1:5060", "tcp", "cid@x", "ft1", 0);
    ck_assert_str_eq(plain, sip_route_uri(pool, "127.0.0.1:5060", "tcp", "cid@x", "ft1"));
    ck_assert(sip_route_flow(pool, plain) == 0);
    ck_assert(sip_route_flow(pool, "<sip:h;flow=12;lr>") == 0);
    ck_assert(sip_route_flow(pool, "<sip:h;flow=zz00000000000000;lr>") == 0);
}
END_TEST

START_TEST(flows_record_route)
{
    const char *me = "127.0.0.1:5060", *const *v;
    sip_msg_t *m;

    sip_route_set_secret(RS_SECRET, strlen(RS_SECRET));
    m = parse_ok("INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
                 "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n"
                 "Max-Forwards: 70\r\nFrom: <sip:alice@a.example>;tag=ft1\r\n"
                 "To: <sip:bob@a.example>\r\nCall-ID: cid1\r\nCSeq: 1 INVITE\r\n\r\n");
    /* RFC 7118 §5 with RFC 5658: from a browser (flow 1) to UDP, the
     * browser's side names its transport and flow */
    v = record_route_values(pool, m, NULL, me, SIP_TP_WS, 1, SIP_TP_UDP, 0);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_nonnull(strstr(v[0], "<sip:127.0.0.1:5060;lr;ftag=ft1;rs="));
    ck_assert_ptr_nonnull(strstr(v[1], "<sip:127.0.0.1:5060;transport=ws;flow=0000000000000001;lr;"));
    ck_assert_ptr_null(v[2]);
    /* browser to browser: one transport, two flows, two entries */
    v = record_route_values(pool, m, NULL, me, SIP_TP_WS, 1, SIP_TP_WS, 2);
    ck_assert_ptr_nonnull(strstr(v[0], ";transport=ws;flow=0000000000000002;"));
    ck_assert_ptr_nonnull(strstr(v[1], ";transport=ws;flow=0000000000000001;"));
    ck_assert_ptr_null(v[2]);
    /* to a TLS flow from UDP: the TLS side is the top one */
    v = record_route_values(pool, m, NULL, me, SIP_TP_UDP, 0, SIP_TP_TLS, 3);
    ck_assert_ptr_nonnull(strstr(v[0], ";transport=tls;flow=0000000000000003;"));
    ck_assert_ptr_nonnull(strstr(v[1], "<sip:127.0.0.1:5060;lr;"));
}
END_TEST

START_TEST(flows_journal_transport)
{
    apr_time_t now = apr_time_from_sec(1000000);
    journal_rec_t r;

    /* the eleventh field: the transport the binding was made over */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@x.invalid;transport=ws\t\tcid\t7\t1000000000000\t500\t\t\tws",
                                2, now, &r), 'B');
    ck_assert_int_eq(r.b.transport, SIP_TP_WS);
    ck_assert(r.b.flow == 0);   /* a flow never comes back from the journal */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t7\t1000000000000\t500\t\t",
                                2, now, &r), 'B');
    ck_assert_int_eq(r.b.transport, SIP_TP_UDP);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t7\t1000000000000\t500\t\t\tbogus",
                                2, now, &r), 'B');
    ck_assert_int_eq(r.b.transport, SIP_TP_UDP);
}
END_TEST

START_TEST(flows_transport_ids)
{
    sip_source_t src, out;

    /* UDP, and no connection: no flow; an unknown id resolves to nothing */
    memset(&src, 0, sizeof(src));
    ck_assert(sip_source_flow_id(&src) == 0);
    src.kind = SIP_TP_WS;
    ck_assert(sip_source_flow_id(&src) == 0);
    ck_assert_int_eq(sip_transport_flow_source(0, &out), 0);
    ck_assert_int_eq(sip_transport_flow_source(APR_UINT64_C(12345), &out), 0);
}
END_TEST

static Suite *flows_suite(void)
{
    Suite *s = suite_create("flows");
    TCase *tc = tcase_create("flows");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, flows_reach_policy);
    tcase_add_test(tc, flows_route_token);
    tcase_add_test(tc, flows_record_route);
    tcase_add_test(tc, flows_journal_transport);
    tcase_add_test(tc, flows_transport_ids);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- WebSocket framing and handshake (sip_ws.c, RFC 6455) ---- */

/* A masked client frame: header, key, masked payload; returns its length. */
static apr_size_t ws_client_frame(unsigned char *out, int b0, const char *payload, apr_size_t len)
{
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    apr_size_t hl = 0, i;

    out[hl++] = (unsigned char)b0;
    if (len < 126)
        out[hl++] = (unsigned char)(0x80 | len);
    else {
        out[hl++] = 0x80 | 126;
        out[hl++] = (unsigned char)(len >> 8);
        out[hl++] = (unsigned char)len;
    }
    memcpy(out + hl, key, 4);
    hl += 4;
    for (i = 0; i < len; i++)
        out[hl + i] = (unsigned char)payload[i] ^ key[i & 3];
    return hl + len;
}

START_TEST(ws_parse_frames)
{
    unsigned char b[400];
    sip_ws_frame_t f;
    apr_size_t n, i;
    char big[300];

    /* RFC 6455 §5.7: a masked "Hello" */
    static const unsigned char hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f,
                                          0x4d, 0x51, 0x58};
    ck_assert_int_eq(sip_ws_frame_parse((const char *)hello, sizeof(hello), 1, 1000, &f), 1);
    ck_assert_int_eq(f.fin, 1);
    ck_assert_int_eq(f.opcode, SIP_WS_TEXT);
    ck_assert_int_eq(f.masked, 1);
    ck_assert_uint_eq(f.payload_len, 5);
    ck_assert_uint_eq(f.header_len, 6);
    memcpy(b, hello, sizeof(hello));
    sip_ws_unmask((char *)b + 6, 5, b + 2);
    ck_assert(memcmp(b + 6, "Hello", 5) == 0);
    /* every prefix is "more bytes needed" */
    for (i = 0; i < sizeof(hello); i++)
        ck_assert_int_eq(sip_ws_frame_parse((const char *)hello, i, 1, 1000, &f), 0);
    /* unmasked from a client: 1002 when masking is required, fine otherwise */
    static const unsigned char plain[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    ck_assert_int_eq(sip_ws_frame_parse((const char *)plain, sizeof(plain), 1, 1000, &f), -1002);
    ck_assert_int_eq(sip_ws_frame_parse((const char *)plain, sizeof(plain), 0, 1000, &f), 1);
    /* RSV bits, reserved opcodes */
    n = ws_client_frame(b, 0x81 | 0x40, "x", 1);
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 1000, &f), -1002);
    for (i = 3; i < 16; i++) {
        if (i == 8 || i == 9 || i == 10)
            continue;
        n = ws_client_frame(b, 0x80 | (int)i, "x", 1);
        ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 1000, &f), -1002);
    }
    /* control frames: whole, at most 125 bytes */
    n = ws_client_frame(b, 0x09, "x", 1);     /* ping without FIN */
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 1000, &f), -1002);
    memset(big, 'a', sizeof(big));
    n = ws_client_frame(b, 0x89, big, 125);
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 1000, &f), 1);
    n = ws_client_frame(b, 0x89, big, 126);
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 1000, &f), -1002);
    /* 16-bit length */
    n = ws_client_frame(b, 0x82, big, 300);
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 1000, &f), 1);
    ck_assert_uint_eq(f.payload_len, 300);
    ck_assert_uint_eq(f.header_len, 8);
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n, 1, 299, &f), -1009);
    ck_assert_int_eq(sip_ws_frame_parse((char *)b, n - 1, 1, 1000, &f), 0);
    /* 64-bit length: too big is known from the header alone; MSB set is bad */
    {
        unsigned char h64[14] = {0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
        ck_assert_int_eq(sip_ws_frame_parse((char *)h64, 10, 1, 65536, &f), -1009);
        ck_assert_int_eq(sip_ws_frame_parse((char *)h64, 9, 1, 65536, &f), 0);
        h64[2] = 0x80;
        ck_assert_int_eq(sip_ws_frame_parse((char *)h64, 14, 1, (apr_uint64_t)-1, &f), -1002);
        memset(h64 + 2, 0, 8);
        h64[9] = 5;
        ck_assert_int_eq(sip_ws_frame_parse((char *)h64, 14, 1, 1000, &f), 0);
        ck_assert_uint_eq(f.payload_len, 5);
        ck_assert_uint_eq(f.header_len, 14);
    }
}
END_TEST

START_TEST(ws_server_header)
{
    unsigned char h[10];
    sip_ws_frame_t f;
    char buf[70000];

    ck_assert_uint_eq(sip_ws_frame_header(h, SIP_WS_TEXT, 5), 2);
    ck_assert_int_eq(h[0], 0x81);
    ck_assert_int_eq(h[1], 5);
    ck_assert_uint_eq(sip_ws_frame_header(h, SIP_WS_BINARY, 126), 4);
    ck_assert_int_eq(h[0], 0x82);
    ck_assert_int_eq(h[1], 126);
    ck_assert_int_eq(h[2] << 8 | h[3], 126);
    ck_assert_uint_eq(sip_ws_frame_header(h, SIP_WS_TEXT, 65535), 4);
    ck_assert_uint_eq(sip_ws_frame_header(h, SIP_WS_TEXT, 65536), 10);
    ck_assert_int_eq(h[1], 127);
    ck_assert_int_eq(h[7], 1);
    ck_assert_int_eq(h[9], 0);
    /* what we write, we parse back (unmasked) */
    memcpy(buf, h, 10);
    ck_assert_int_eq(sip_ws_frame_parse(buf, 10 + 65536 - 1, 0, 1 << 20, &f), 0);
    ck_assert_int_eq(sip_ws_frame_parse(buf, 10 + 65536, 0, 1 << 20, &f), 1);
    ck_assert_uint_eq(f.payload_len, 65536);
    ck_assert_int_eq(f.masked, 0);
}
END_TEST

static apr_table_t *ws_headers(const char *version, const char *key, const char *proto)
{
    apr_table_t *t = apr_table_make(pool, 8);

    apr_table_set(t, "Host", "example.com");
    apr_table_set(t, "Upgrade", "websocket");
    apr_table_set(t, "Connection", "keep-alive, Upgrade");
    if (version)
        apr_table_set(t, "Sec-WebSocket-Version", version);
    if (key)
        apr_table_set(t, "Sec-WebSocket-Key", key);
    if (proto)
        apr_table_set(t, "Sec-WebSocket-Protocol", proto);
    return t;
}

START_TEST(ws_handshake)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==", *accept, *why;
    apr_table_t *t;
    int status;

    /* §1.3's example */
    ck_assert_str_eq(sip_ws_accept_key(pool, key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    t = ws_headers("13", key, "xmpp, sip");
    why = sip_ws_handshake_check(pool, "GET", t, &accept, &status);
    ck_assert_msg(why == NULL, "%s", why);
    ck_assert_int_eq(status, 101);
    ck_assert_str_eq(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* header names and tokens are case-insensitive; repeated headers count */
    t = ws_headers("13", key, NULL);
    apr_table_set(t, "upgrade", "WebSocket");
    apr_table_set(t, "connection", "UPGRADE");
    apr_table_add(t, "Sec-WebSocket-Protocol", "xmpp");
    apr_table_add(t, "Sec-WebSocket-Protocol", "sip");
    ck_assert(sip_ws_handshake_check(pool, "GET", t, &accept, &status) == NULL);
    /* refusals */
    ck_assert(sip_ws_handshake_check(pool, "POST", ws_headers("13", key, "sip"), &accept,
                                     &status) != NULL);
    ck_assert_int_eq(status, 400);
    ck_assert(accept == NULL);
    ck_assert(sip_ws_handshake_check(pool, "GET", ws_headers("8", key, "sip"), &accept,
                                     &status) != NULL);
    ck_assert_int_eq(status, 426);
    ck_assert(sip_ws_handshake_check(pool, "GET", ws_headers(NULL, key, "sip"), &accept,
                                     &status) != NULL);
    ck_assert_int_eq(status, 426);
    ck_assert(sip_ws_handshake_check(pool, "GET", ws_headers("13", NULL, "sip"), &accept,
                                     &status) != NULL);
    ck_assert_int_eq(status, 400);
    /* a key must be 16 bytes base64 */
    ck_assert(sip_ws_handshake_check(pool, "GET", ws_headers("13", "c2hvcnQ=", "sip"), &accept,
                                     &status) != NULL);
    ck_assert(sip_ws_handshake_check(pool, "GET",
                                     ws_headers("13", "dGhlIHNhbXBsZSBub25j!!==", "sip"),
                                     &accept, &status) != NULL);
    ck_assert_int_eq(status, 400);
    /* RFC 7118 §4.1: "sip" must be offered ("sips" is not "sip") */
    ck_assert(sip_ws_handshake_check(pool, "GET", ws_headers("13", key, "sips, chat"), &accept,
                                     &status) != NULL);
    ck_assert_int_eq(status, 400);
    ck_assert(sip_ws_handshake_check(pool, "GET", ws_headers("13", key, NULL), &accept,
                                     &status) != NULL);
    t = ws_headers("13", key, "sip");
    apr_table_set(t, "Connection", "keep-alive");
    ck_assert(sip_ws_handshake_check(pool, "GET", t, &accept, &status) != NULL);
    t = ws_headers("13", key, "sip");
    apr_table_unset(t, "Upgrade");
    ck_assert(sip_ws_handshake_check(pool, "GET", t, &accept, &status) != NULL);
    ck_assert_int_eq(status, 400);
}
END_TEST

START_TEST(ws_http_head)
{
    static const char req[] = "GET /sip?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                              "Upgrade:  websocket \r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Protocol: xmpp\r\n\r\nFRAME";
    const char *method, *path;
    apr_table_t *h;
    apr_size_t used = 0, i, n = sizeof(req) - 1 - 5;
    char *big;

    ck_assert_int_eq(sip_ws_http_request_parse(pool, req, sizeof(req) - 1, &method, &path, &h,
                                               &used), 1);
    ck_assert_uint_eq(used, n);
    ck_assert_str_eq(method, "GET");
    ck_assert_str_eq(path, "/sip?x=1");
    ck_assert_str_eq(apr_table_get(h, "upgrade"), "websocket");
    ck_assert_int_eq(apr_table_elts(h)->nelts, 5);
    /* every prefix of the head needs more bytes */
    for (i = 0; i < n; i++)
        ck_assert_int_eq(sip_ws_http_request_parse(pool, req, i, &method, &path, &h, &used), 0);
    /* not HTTP/1.1 request heads */
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET /sip HTTP/1.0\r\n\r\n", 21, &method,
                                               &path, &h, &used), -1);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET sip HTTP/1.1\r\n\r\n", 20, &method,
                                               &path, &h, &used), -1);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET /a b HTTP/1.1\r\n\r\n", 21, &method,
                                               &path, &h, &used), -1);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET / HTTP/1.1\r\nNoColon\r\n\r\n", 27,
                                               &method, &path, &h, &used), -1);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET / HTTP/1.1\r\n folded\r\n\r\n", 27,
                                               &method, &path, &h, &used), -1);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET / HTTP/1.1\nA: b\r\n\r\n", 23,
                                               &method, &path, &h, &used), -1);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, "GET / HTTP/1.1\r\nA\0: b\r\n\r\n", 25,
                                               &method, &path, &h, &used), -1);
    /* 8 KB without the blank line: refused, not buffered further */
    big = apr_palloc(pool, SIP_WS_MAX_REQUEST + 10);
    memset(big, 'a', SIP_WS_MAX_REQUEST + 10);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, big, SIP_WS_MAX_REQUEST - 1, &method, &path,
                                               &h, &used), 0);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, big, SIP_WS_MAX_REQUEST, &method, &path,
                                               &h, &used), -1);
    memcpy(big + SIP_WS_MAX_REQUEST + 2, "\r\n\r\n", 4);
    ck_assert_int_eq(sip_ws_http_request_parse(pool, big, SIP_WS_MAX_REQUEST + 6, &method, &path,
                                               &h, &used), -1);
}
END_TEST

static Suite *ws_suite(void)
{
    Suite *s = suite_create("ws");
    TCase *tc = tcase_create("ws");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, ws_parse_frames);
    tcase_add_test(tc, ws_server_header);
    tcase_add_test(tc, ws_handshake);
    tcase_add_test(tc, ws_http_head);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- TLS layer (sip_tls.c): non-blocking handshake and I/O over a
 * socketpair, with a server context registered as mod_ssl's hook would,
 * and the client's certificate name check (RFC 5922) ---- */

/* A self-signed certificate for 'san' (e.g. "DNS:localhost") and its key. */
static void tls_make_cert(const char *san, X509 **cert, EVP_PKEY **key)
{
    X509_NAME *name;
    X509_EXTENSION *ext;
    X509V3_CTX v3;

    *key = EVP_RSA_gen(2048);
    ck_assert_ptr_nonnull(*key);
    *cert = X509_new();
    X509_set_version(*cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(*cert), 7);
    X509_gmtime_adj(X509_getm_notBefore(*cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(*cert), 3600);
    X509_set_pubkey(*cert, *key);
    name = X509_get_subject_name(*cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"unit", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(*cert, name);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, *cert, *cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    ck_assert_ptr_nonnull(ext);
    X509_add_ext(*cert, ext, -1);
    X509_EXTENSION_free(ext);
    ck_assert(X509_sign(*cert, *key, EVP_sha256()) > 0);
}

/* Drive both ends until the client's message arrived at the server;
 * returns the bytes read there. */
static ssize_t tls_pump(sip_tls_conn_t *cli, sip_tls_conn_t *srv, const char *msg,
                        char *buf, apr_size_t size, int *client_error)
{
    apr_size_t sent = 0;
    int i;

    *client_error = 0;
    for (i = 0; i < 200; i++) {
        ssize_t n;
        if (sent < strlen(msg)) {
            n = sip_tls_write(cli, msg + sent, strlen(msg) - sent);
            if (n > 0)
                sent += (apr_size_t)n;
            else if (n == SIP_TLS_ERROR || n == SIP_TLS_CLOSED) {
                *client_error = 1;
                return -1;
            }
            else
                ck_assert(n == SIP_TLS_WANT_READ || n == SIP_TLS_WANT_WRITE);
        }
        n = sip_tls_read(srv, buf, size);
        if (n > 0)
            return n;
        if (n == SIP_TLS_ERROR || n == SIP_TLS_CLOSED)
            return -1;
    }
    return -1;
}

START_TEST(tls_socketpair)
{
    server_rec vhost;
    X509 *cert;
    EVP_PKEY *key;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    int sv[2];
    sip_tls_conn_t *srv, *cli;
    char buf[256];
    int cerr;
    ssize_t n;
    apr_table_t *env = apr_table_make(pool, 8);

    server_addr_rec addr;
    server_rec plain;

    memset(&vhost, 0, sizeof(vhost));
    memset(&plain, 0, sizeof(plain));
    memset(&addr, 0, sizeof(addr));
    addr.host_port = 5061;
    vhost.addrs = &addr;
    tls_make_cert("DNS:localhost", &cert, &key);
    ck_assert(SSL_CTX_use_certificate(sctx, cert) == 1);
    ck_assert(SSL_CTX_use_PrivateKey(sctx, key) == 1);
    /* what mod_ssl's init_server hook hands over, then the engine's set-up */
    tls_init_server(&vhost, pool, 0, sctx);
    ck_assert(sip_tls_engine_init(pool, &vhost) == APR_SUCCESS);
    ck_assert(sip_tls_vhost_enabled(&vhost));
    ck_assert(!sip_tls_vhost_enabled(pool));
    ck_assert_ptr_null(sip_tls_accept(0, pool));       /* no context: refused */
    /* Via and Record-Route on the TLS side: the TLS vhost's port */
    ck_assert_int_eq(sip_tls_port(&plain), 5061);
    ck_assert_str_eq(hostport_on(pool, &plain, "192.0.2.1:5060", SIP_TP_TLS), "192.0.2.1:5061");
    ck_assert_str_eq(hostport_on(pool, &plain, "[2001:db8::1]:5060", SIP_TP_TLS), "[2001:db8::1]:5061");
    ck_assert_str_eq(hostport_on(pool, &plain, "sip.example.org", SIP_TP_TLS), "sip.example.org:5061");
    ck_assert_str_eq(hostport_on(pool, &plain, "192.0.2.1:5060", SIP_TP_UDP), "192.0.2.1:5060");
    X509_STORE_add_cert(SSL_CTX_get_cert_store(system_client_ctx), cert);

    /* the right name: handshake, data, mod_ssl's variables */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    srv = sip_tls_accept(sv[0], &vhost);
    cli = sip_tls_connect(sv[1], &vhost, "localhost");
    ck_assert_ptr_nonnull(srv);
    ck_assert_ptr_nonnull(cli);
    ck_assert(!sip_tls_established(srv));
    ck_assert_int_eq(sip_tls_read(srv, buf, sizeof(buf)), SIP_TLS_WANT_READ);   /* nothing yet */
    n = tls_pump(cli, srv, "OPTIONS sip:x SIP/2.0\r\n\r\n", buf, 8, &cerr);
    ck_assert_int_eq(n, 8);                  /* a short read leaves the rest in the layer */
    ck_assert(sip_tls_established(srv));
    ck_assert(sip_tls_pending(srv));
    n = sip_tls_read(srv, buf + 8, sizeof(buf) - 8);
    ck_assert_int_eq(n, 17);
    ck_assert(!sip_tls_pending(srv));
    ck_assert(memcmp(buf, "OPTIONS sip:x SIP/2.0\r\n\r\n", 25) == 0);
    ck_assert_ptr_null(sip_tls_peer_subject(pool, srv));    /* no client certificate */
    ck_assert_str_eq(sip_tls_peer_subject(pool, cli), "CN=localhost,O=unit");
    sip_tls_env(pool, srv, env);
    ck_assert_str_eq(apr_table_get(env, "HTTPS"), "on");
    ck_assert_str_eq(apr_table_get(env, "SSL_CLIENT_VERIFY"), "NONE");
    ck_assert(strncmp(apr_table_get(env, "SSL_PROTOCOL"), "TLSv1.", 6) == 0);
    ck_assert_ptr_nonnull(apr_table_get(env, "SSL_CIPHER"));
    /* the peer's close: close_notify reads as SIP_TLS_CLOSED */
    sip_tls_free(cli);
    ck_assert_int_eq(sip_tls_read(srv, buf, sizeof(buf)), SIP_TLS_CLOSED);
    sip_tls_free(srv);
    close(sv[0]);
    close(sv[1]);

    /* another name (RFC 5922 §7.2): refused before any data goes out */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    srv = sip_tls_accept(sv[0], &vhost);
    cli = sip_tls_connect(sv[1], &vhost, "sip.example.org");
    n = tls_pump(cli, srv, "OPTIONS sip:x SIP/2.0\r\n\r\n", buf, sizeof(buf), &cerr);
    ck_assert_int_lt(n, 0);
    ck_assert(cerr);
    ck_assert(!sip_tls_established(cli));
    sip_tls_free(cli);
    sip_tls_free(srv);
    close(sv[0]);
    close(sv[1]);

    /* garbage instead of a ClientHello: an error, not a hang */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    srv = sip_tls_accept(sv[0], &vhost);
    ck_assert_int_eq(write(sv[1], "OPTIONS sip:x SIP/2.0\r\n\r\n", 25), 25);
    ck_assert_int_eq(sip_tls_read(srv, buf, sizeof(buf)), SIP_TLS_ERROR);
    sip_tls_free(srv);
    close(sv[0]);
    close(sv[1]);

    SSL_CTX_free(system_client_ctx);
    system_client_ctx = NULL;
    tls_vhosts = NULL;
    SSL_CTX_free(sctx);
    X509_free(cert);
    EVP_PKEY_free(key);
}
END_TEST

START_TEST(tls_uri_kind)
{
    sip_uri_info_t u;

    /* no TLS vhost at all: our address stays as it is */
    ck_assert_str_eq(hostport_on(pool, NULL, "192.0.2.1:5060", SIP_TP_TLS), "192.0.2.1:5060");

    ck_assert(sip_uri_info(pool, "sips:bob@example.org", &u));
    ck_assert(u.secure);
    ck_assert_int_eq(hop_kind(&u, NULL), SIP_TP_TLS);
    ck_assert(sip_uri_info(pool, "sip:bob@example.org;transport=TLS", &u));
    ck_assert(!u.secure);
    ck_assert_int_eq(hop_kind(&u, NULL), SIP_TP_TLS);
    ck_assert(sip_uri_info(pool, "sips:bob@example.org;transport=tcp", &u));
    ck_assert_int_eq(hop_kind(&u, NULL), SIP_TP_TLS);       /* sips: is TLS on TCP */
    ck_assert(sip_uri_info(pool, "sip:bob@example.org", &u));
    ck_assert_int_eq(hop_kind(&u, NULL), SIP_TP_UDP);
    ck_assert_int_eq(hop_kind(&u, "tls"), SIP_TP_TLS);      /* from our recorded route */
    ck_assert_int_eq(hop_kind(&u, "tcp"), SIP_TP_TCP);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, tls_socketpair);
    tcase_add_test(tc, tls_uri_kind);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- FastCGI records (sip_fcgi.c) ---- */

typedef struct fcgi_capture {
    char out[200000];
    apr_size_t olen;
    char err[256];
    apr_size_t elen;
} fcgi_capture_t;

static void fcgi_cap_out(void *b, const char *buf, apr_size_t len)
{
    fcgi_capture_t *c = b;
    ck_assert_uint_le(c->olen + len, sizeof(c->out));
    memcpy(c->out + c->olen, buf, len);
    c->olen += len;
}

static void fcgi_cap_err(void *b, const char *buf, apr_size_t len)
{
    fcgi_capture_t *c = b;
    ck_assert_uint_le(c->elen + len, sizeof(c->err));
    memcpy(c->err + c->elen, buf, len);
    c->elen += len;
}

/* One record: type, id, content, padding. */
static apr_size_t fcgi_t_rec(unsigned char *o, int type, int id, const char *c, apr_size_t clen,
                           int pad)
{
    o[0] = 1;
    o[1] = (unsigned char)type;
    o[2] = (unsigned char)(id >> 8);
    o[3] = (unsigned char)id;
    o[4] = (unsigned char)(clen >> 8);
    o[5] = (unsigned char)clen;
    o[6] = (unsigned char)pad;
    o[7] = 0;
    memcpy(o + 8, c, clen);
    memset(o + 8 + clen, 0xEE, (apr_size_t)pad);
    return 8 + clen + (apr_size_t)pad;
}

static apr_size_t fcgi_t_end(unsigned char *o, int id, apr_uint32_t app, int proto)
{
    char b[8] = {(char)(app >> 24), (char)(app >> 16), (char)(app >> 8), (char)app,
                 (char)proto, 0, 0, 0};
    return fcgi_t_rec(o, AP_FCGI_END_REQUEST, id, b, 8, 0);
}

/* Walks an encoded request the way a worker reads it. */
START_TEST(fcgi_encode_request_roundtrip)
{
    apr_pool_t *p;
    char big[70000];
    const char *env[] = {"GATEWAY_INTERFACE=SIP-CGI/1.1", "REQUEST_METHOD=INVITE",
                         "EMPTY=", "SIP_VIA=a=b=c", NULL, NULL};
    apr_size_t len = 0, pos = 0, plen = 0, slen = 0;
    unsigned char *params = NULL;
    char *stdin_buf;
    const unsigned char *b;
    int saw_begin = 0, params_end = 0, stdin_end = 0;
    apr_table_t *t;
    const char *why = NULL;

    apr_pool_create(&p, NULL);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    env[4] = apr_pstrcat(p, "SIP_LONG=", big, NULL);   /* a pair over one record */
    b = (const unsigned char *)sip_fcgi_encode_request(p, 7, 1, env, big, 70000 - 1, &len);
    ck_assert_ptr_nonnull(b);
    params = apr_palloc(p, len);
    stdin_buf = apr_palloc(p, len);
    while (pos < len) {
        apr_size_t clen, pad;
        ck_assert_uint_ge(len - pos, 8);
        ck_assert_int_eq(b[0 + pos], 1);
        ck_assert_int_eq((b[pos + 2] << 8) | b[pos + 3], 7);
        clen = ((apr_size_t)b[pos + 4] << 8) | b[pos + 5];
        pad = b[pos + 6];
        ck_assert_int_eq((clen + pad) % 8, 0);
        ck_assert_uint_le(pos + 8 + clen + pad, len);
        switch (b[pos + 1]) {
        case AP_FCGI_BEGIN_REQUEST:
            ck_assert_uint_eq(clen, 8);
            ck_assert_int_eq(b[pos + 9], AP_FCGI_RESPONDER);
            ck_assert_int_eq(b[pos + 10], AP_FCGI_KEEP_CONN);
            saw_begin = 1;
            break;
        case AP_FCGI_PARAMS:
            ck_assert(saw_begin && !params_end);
            if (!clen)
                params_end = 1;
            memcpy(params + plen, b + pos + 8, clen);
            plen += clen;
            break;
        case AP_FCGI_STDIN:
            ck_assert(params_end && !stdin_end);
            if (!clen)
                stdin_end = 1;
            memcpy(stdin_buf + slen, b + pos + 8, clen);
            slen += clen;
            break;
        default:
            ck_abort_msg("unexpected record type %d", b[pos + 1]);
        }
        pos += 8 + clen + pad;
    }
    ck_assert(stdin_end);
    ck_assert_uint_eq(slen, 70000 - 1);
    ck_assert_int_eq(memcmp(stdin_buf, big, slen), 0);
    t = apr_table_make(p, 8);
    ck_assert_int_eq(sip_fcgi_decode_params(p, params, plen, t, &why), 0);
    ck_assert_int_eq(apr_table_elts(t)->nelts, 5);
    ck_assert_str_eq(apr_table_get(t, "REQUEST_METHOD"), "INVITE");
    ck_assert_str_eq(apr_table_get(t, "EMPTY"), "");
    ck_assert_str_eq(apr_table_get(t, "SIP_VIA"), "a=b=c");
    ck_assert_str_eq(apr_table_get(t, "SIP_LONG"), big);
    /* no '=': refused; no body: the empty STDIN alone */
    {
        const char *bad[] = {"NOEQUALS", NULL};
        ck_assert_ptr_null(sip_fcgi_encode_request(p, 1, 0, bad, NULL, 0, &len));
        b = (const unsigned char *)sip_fcgi_encode_request(p, 1, 0, NULL, NULL, 0, &len);
        ck_assert_uint_eq(len, 16 + 8 + 8);
        ck_assert_int_eq(b[10], 0);
    }
    {
        unsigned char ab[8];
        static const unsigned char want[8] = {1, AP_FCGI_ABORT_REQUEST, 0x01, 0x02, 0, 0, 0, 0};
        sip_fcgi_encode_abort(ab, 0x0102);
        ck_assert_int_eq(memcmp(ab, want, 8), 0);
    }
    ck_assert_int_eq(sip_fcgi_decode_params(p, (const unsigned char *)"\x05\x01" "ab", 4, t,
                                            &why), -1);
    ck_assert_int_eq(sip_fcgi_decode_params(p, (const unsigned char *)"\x80\x00", 2, t, &why), -1);
    apr_pool_destroy(p);
}
END_TEST

/* A well-formed answer, fed whole and then one byte at a time. */
START_TEST(fcgi_parse_answer)
{
    unsigned char a[512];
    apr_size_t n = 0, used = 0, i;
    fcgi_capture_t *c = calloc(1, sizeof(*c));
    sip_fcgi_parser_t ps;
    const char *why = NULL;
    int r = 0;

    n += fcgi_t_rec(a + n, AP_FCGI_STDERR, 3, "warn\n", 5, 3);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 3, "SIP/2.0 302 Moved\r\n", 19, 5);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 3, "Contact: <sip:x@y>\r\n\r\n", 22, 2);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 3, "", 0, 0);
    n += fcgi_t_rec(a + n, AP_FCGI_STDERR, 3, "", 0, 0);
    n += fcgi_t_end(a + n, 3, 4, 0);
    a[n++] = 1;   /* the next answer's first byte: not this request's */

    sip_fcgi_parser_init(&ps, 3, 100, fcgi_cap_out, fcgi_cap_err, c);
    ck_assert_int_eq(sip_fcgi_parse(&ps, (char *)a, n, &used, &why), 1);
    ck_assert_uint_eq(used, n - 1);
    ck_assert_uint_eq(c->olen, 41);
    ck_assert_int_eq(memcmp(c->out, "SIP/2.0 302 Moved\r\nContact: <sip:x@y>\r\n\r\n", 41), 0);
    ck_assert_uint_eq(c->elen, 5);
    ck_assert_uint_eq(ps.app_status, 4);
    ck_assert_int_eq(ps.protocol_status, 0);
    ck_assert_int_eq(sip_fcgi_parse(&ps, (char *)a, 1, &used, &why), -1);

    memset(c, 0, sizeof(*c));
    sip_fcgi_parser_init(&ps, 3, 100, fcgi_cap_out, fcgi_cap_err, c);
    for (i = 0; i < n - 1; i++) {
        r = sip_fcgi_parse(&ps, (char *)a + i, 1, &used, &why);
        ck_assert_int_eq(r, i == n - 2 ? 1 : 0);
        ck_assert_uint_eq(used, 1);
    }
    ck_assert_uint_eq(c->olen, 41);
    ck_assert_uint_eq(c->elen, 5);
    free(c);
}
END_TEST

/* Malformed answers are refused, each with its reason. */
START_TEST(fcgi_parse_malformed)
{
    static const struct {
        int version, type, id, clen;
        const char *why;
    } cases[] = {
        {2, AP_FCGI_STDOUT, 3, 0, "version"},
        {1, AP_FCGI_STDOUT, 4, 0, "another request"},
        {1, AP_FCGI_GET_VALUES_RESULT, 0, 0, "management"},
        {1, AP_FCGI_PARAMS, 3, 0, "type"},
        {1, 200, 3, 0, "type"},
        {1, AP_FCGI_END_REQUEST, 3, 4, "8 bytes"},
        {1, AP_FCGI_STDERR, 3, 101, "STDERR"},
    };
    unsigned char a[600];
    apr_size_t used, n;
    sip_fcgi_parser_t ps;
    const char *why;
    unsigned i;

    memset(a, 0, sizeof(a));
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = fcgi_t_rec(a, cases[i].type, cases[i].id, (const char *)a + 300,
                     (apr_size_t)cases[i].clen, 0);
        a[0] = (unsigned char)cases[i].version;
        why = NULL;
        sip_fcgi_parser_init(&ps, 3, 100, NULL, NULL, NULL);
        ck_assert_int_eq(sip_fcgi_parse(&ps, (char *)a, n, &used, &why), -1);
        ck_assert_ptr_nonnull(why);
        ck_assert_msg(strstr(why, cases[i].why), "case %u: %s", i, why);
    }
    /* STDOUT after its empty record */
    n = fcgi_t_rec(a, AP_FCGI_STDOUT, 3, "", 0, 0);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 3, "x", 1, 7);
    sip_fcgi_parser_init(&ps, 3, 100, NULL, NULL, NULL);
    ck_assert_int_eq(sip_fcgi_parse(&ps, (char *)a, n, &used, &why), -1);
    ck_assert_str_eq(why, "STDOUT after its end");
    /* stderr over the limit across records */
    n = fcgi_t_rec(a, AP_FCGI_STDERR, 3, (const char *)a + 300, 60, 4);
    n += fcgi_t_rec(a + n, AP_FCGI_STDERR, 3, (const char *)a + 300, 60, 4);
    sip_fcgi_parser_init(&ps, 3, 100, NULL, NULL, NULL);
    ck_assert_int_eq(sip_fcgi_parse(&ps, (char *)a, n, &used, &why), -1);
    /* OVERLOADED is reported, not refused */
    n = fcgi_t_end(a, 3, 0, 2);
    sip_fcgi_parser_init(&ps, 3, 100, NULL, NULL, NULL);
    ck_assert_int_eq(sip_fcgi_parse(&ps, (char *)a, n, &used, &why), 1);
    ck_assert_int_eq(ps.protocol_status, 2);
}
END_TEST

/* The directives and which selected script goes to which target. */
START_TEST(fcgi_directives_and_lookup)
{
    apr_pool_t *p;
    server_rec srv;
    cmd_parms cmd;
    char prog[PATH_MAX], *a[4];
    sip_fcgi_target_t *pool_t, *ext_t;

    apr_pool_create(&p, NULL);
    memset(&srv, 0, sizeof(srv));
    memset(&cmd, 0, sizeof(cmd));
    cmd.pool = p;
    cmd.server = &srv;
    stub_conf.fcgi = NULL;
    ck_assert_ptr_nonnull(realpath("/bin/sh", prog));

#define ARGS1(x) (a[0] = (char *)(x), a)
#define ARGS2(x, y) (a[0] = (char *)(x), a[1] = (char *)(y), a)
#define ARGS3(x, y, z) (a[0] = (char *)(x), a[1] = (char *)(y), a[2] = (char *)(z), a)
    /* settings before any target have nothing to apply to */
    ck_assert_ptr_nonnull(sip_fcgi_cmd_max_requests(&cmd, "10"));
    ck_assert_ptr_null(sip_fcgi_cmd_pool(&cmd, 3, ARGS3("/bin/sh", "1", "3")));
    ck_assert_ptr_null(sip_fcgi_cmd_max_requests(&cmd, "10"));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_max_requests(&cmd, "-1"));
    ck_assert_ptr_null(sip_fcgi_cmd_idle(&cmd, "30"));
    ck_assert_ptr_null(sip_fcgi_cmd_queue(&cmd, "0"));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_pool(&cmd, 1, ARGS1("relative")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_pool(&cmd, 3, ARGS3("/bin/sh", "4", "2")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_pool(&cmd, 3, ARGS3("/bin/sh", "1", "x")));
    ck_assert_ptr_null(sip_fcgi_cmd_connect(&cmd, 2, ARGS2("ext*", "unix:/run/x.sock")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_max_requests(&cmd, "5"));   /* not a SipFastCGI */
    ck_assert_ptr_null(sip_fcgi_cmd_queue(&cmd, "7"));
    ck_assert_ptr_null(sip_fcgi_cmd_connect(&cmd, 2, ARGS2("shared@*", "pool:/bin/sh")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_connect(&cmd, 2, ARGS2("x", "pool:/bin/nothing-here")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_connect(&cmd, 2, ARGS2("x", "udp:1.2.3.4:5")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_connect(&cmd, 1, ARGS1("unix:relative.sock")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_connect(&cmd, 1, ARGS1("tcp:nohost")));
    ck_assert_ptr_nonnull(sip_fcgi_cmd_connect(&cmd, 3, ARGS3("*", "tcp:127.0.0.1:9000", "0")));
    ck_assert_ptr_null(sip_fcgi_cmd_connect(&cmd, 3, ARGS3("t*", "tcp:127.0.0.1:9000", "8")));

    /* a pool by its program's path; then the patterns in order; else none */
    pool_t = sip_fcgi_lookup(&srv, prog, "anything");
    ck_assert_ptr_nonnull(pool_t);
    ck_assert(pool_t->managed && pool_t->min == 1 && pool_t->max == 3);
    ck_assert_int_eq(pool_t->max_requests, 10);
    ck_assert(pool_t->idle == apr_time_from_sec(30) && pool_t->queue_max == 0);
    ext_t = sip_fcgi_lookup(&srv, "/srv/x/ext@example.com", "ext@example.com");
    ck_assert(ext_t && !ext_t->managed && ext_t->family == AF_UNIX);
    ck_assert_str_eq(ext_t->path, "/run/x.sock");
    ck_assert_int_eq(ext_t->queue_max, 7);
    ck_assert_ptr_eq(sip_fcgi_lookup(&srv, "/srv/x/shared@a", "shared@a"), pool_t);
    ck_assert_int_eq(sip_fcgi_lookup(&srv, "/srv/x/tod@a", "tod@a")->max_conns, 8);
    ck_assert_ptr_null(sip_fcgi_lookup(&srv, "/srv/x/bob@a", "bob@a"));
    ck_assert_ptr_null(sip_fcgi_lookup(&srv, "/srv/x/.ext", ".ext"));
#undef ARGS1
#undef ARGS2
#undef ARGS3
    stub_conf.fcgi = NULL;
    apr_pool_destroy(p);    /* its cleanup forgets the targets */
    ck_assert_ptr_null(all_targets);
}
END_TEST

/* The connection-level demultiplexer: two requests' records interleaved,
 * a management record between them, cut at every byte. */
typedef struct fcgi_mux_t {
    sip_fcgi_parser_t ps[2];
    fcgi_capture_t *cap[2];
    int live[2];
    int ended[2];
    int mgmt_type, mgmt_calls, refuse_mgmt;
    apr_size_t mgmt_len;
} fcgi_mux_t;

static sip_fcgi_parser_t *fcgi_mux_lookup(void *b, apr_uint16_t id)
{
    fcgi_mux_t *m = b;
    return id >= 1 && id <= 2 && m->live[id - 1] ? &m->ps[id - 1] : NULL;
}

static int fcgi_mux_mgmt(void *b, int type, const unsigned char *content, apr_size_t len)
{
    fcgi_mux_t *m = b;
    (void)content;
    m->mgmt_type = type;
    m->mgmt_len = len;
    m->mgmt_calls++;
    return m->refuse_mgmt;
}

static int fcgi_mux_after(void *b, sip_fcgi_parser_t *ps, int ended)
{
    fcgi_mux_t *m = b;
    int i = ps == &m->ps[0] ? 0 : 1;
    if (ended) {
        m->ended[i]++;
        m->live[i] = 0;     /* as the engine frees the id */
    }
    return 0;
}

static void fcgi_mux_init(fcgi_mux_t *m, sip_fcgi_demux_t *d)
{
    int i;
    for (i = 0; i < 2; i++) {
        memset(m->cap[i], 0, sizeof(*m->cap[i]));
        sip_fcgi_parser_init(&m->ps[i], (apr_uint16_t)(i + 1), 100, fcgi_cap_out, fcgi_cap_err,
                             m->cap[i]);
        m->live[i] = 1;
        m->ended[i] = 0;
    }
    m->mgmt_calls = 0;
    sip_fcgi_demux_init(d, fcgi_mux_lookup, fcgi_mux_mgmt, fcgi_mux_after, m);
}

START_TEST(fcgi_demux_interleaved)
{
    fcgi_mux_t *m = calloc(1, sizeof(*m));
    sip_fcgi_demux_t *d = calloc(1, sizeof(*d));
    unsigned char a[512], vals[64];
    apr_size_t n = 0, step, i;
    const char *why = NULL;
    int mpxs, maxr;

    m->cap[0] = calloc(1, sizeof(fcgi_capture_t));
    m->cap[1] = calloc(1, sizeof(fcgi_capture_t));
    vals[0] = 15;
    vals[1] = 1;
    memcpy(vals + 2, "FCGI_MPXS_CONNS1", 16);
    vals[18] = 13;
    vals[19] = 2;
    memcpy(vals + 20, "FCGI_MAX_REQS12", 15);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 2, "two-a ", 6, 2);
    n += fcgi_t_rec(a + n, AP_FCGI_GET_VALUES_RESULT, 0, (const char *)vals, 35, 5);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 1, "one-a ", 6, 0);
    n += fcgi_t_rec(a + n, AP_FCGI_STDERR, 2, "w\n", 2, 6);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 2, "two-b", 5, 0);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 2, "", 0, 0);
    n += fcgi_t_end(a + n, 2, 7, 0);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 1, "one-b", 5, 3);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 1, "", 0, 0);
    n += fcgi_t_end(a + n, 1, 0, 0);
    for (step = 1; step <= n; step++) {
        fcgi_mux_init(m, d);
        for (i = 0; i < n; i += step) {
            apr_size_t k = n - i < step ? n - i : step;
            ck_assert_int_eq(sip_fcgi_demux(d, (const char *)a + i, k, &why), 0);
        }
        ck_assert_int_eq(m->ended[0], 1);
        ck_assert_int_eq(m->ended[1], 1);
        ck_assert_uint_eq(m->cap[0]->olen, 11);
        ck_assert(memcmp(m->cap[0]->out, "one-a one-b", 11) == 0);
        ck_assert_uint_eq(m->cap[1]->olen, 11);
        ck_assert(memcmp(m->cap[1]->out, "two-a two-b", 11) == 0);
        ck_assert_uint_eq(m->cap[1]->elen, 2);
        ck_assert_uint_eq(m->ps[1].app_status, 7);
        ck_assert_int_eq(m->mgmt_calls, 1);
        ck_assert_int_eq(m->mgmt_type, AP_FCGI_GET_VALUES_RESULT);
        ck_assert_uint_eq(m->mgmt_len, 35);
    }
    ck_assert_int_eq(sip_fcgi_parse_values(vals, 35, &mpxs, &maxr, &why), 0);
    ck_assert_int_eq(mpxs, 1);
    ck_assert_int_eq(maxr, 12);
    ck_assert_int_eq(sip_fcgi_parse_values(vals, 34, &mpxs, &maxr, &why), -1);
    /* a record for an id that is not in flight (here: after its END) */
    fcgi_mux_init(m, d);
    n = fcgi_t_end(a, 1, 0, 0);
    n += fcgi_t_rec(a + n, AP_FCGI_STDOUT, 1, "late", 4, 4);
    ck_assert_int_eq(sip_fcgi_demux(d, (const char *)a, n, &why), -1);
    ck_assert_str_eq(why, "record for another request");
    /* an unexpected management record, one too long, another version */
    fcgi_mux_init(m, d);
    m->refuse_mgmt = 1;
    n = fcgi_t_rec(a, AP_FCGI_GET_VALUES_RESULT, 0, "", 0, 0);
    ck_assert_int_eq(sip_fcgi_demux(d, (const char *)a, n, &why), -1);
    ck_assert_str_eq(why, "unexpected management record");
    fcgi_mux_init(m, d);
    a[0] = 1;
    a[1] = AP_FCGI_GET_VALUES_RESULT;
    a[2] = a[3] = 0;
    a[4] = 0x10;        /* 4096 bytes */
    a[5] = a[6] = a[7] = 0;
    ck_assert_int_eq(sip_fcgi_demux(d, (const char *)a, 8, &why), -1);
    ck_assert_str_eq(why, "management record too long");
    fcgi_mux_init(m, d);
    n = fcgi_t_rec(a, AP_FCGI_STDOUT, 2, "x", 1, 7);
    a[0] = 2;
    ck_assert_int_eq(sip_fcgi_demux(d, (const char *)a, n, &why), -1);
    ck_assert_str_eq(why, "not a FastCGI version 1 record");
    /* the request's own checks still apply inside the demultiplexer */
    fcgi_mux_init(m, d);
    n = fcgi_t_rec(a, AP_FCGI_BEGIN_REQUEST, 2, "12345678", 8, 0);
    ck_assert_int_eq(sip_fcgi_demux(d, (const char *)a, n, &why), -1);
    ck_assert_str_eq(why, "unexpected record type");
    free(m->cap[0]);
    free(m->cap[1]);
    free(m);
    free(d);
}
END_TEST

/* A request is encoded once and takes its connection's id later; the
 * probe asks for the two values the engine reads. */
START_TEST(fcgi_set_id_and_get_values)
{
    apr_pool_t *p;
    const char *env[] = {"A=1", "REQUEST_METHOD=INVITE", NULL};
    char *b;
    apr_size_t len, pos = 0, records = 0;
    unsigned char gv[64];
    apr_table_t *t;
    const char *why;

    apr_pool_create(&p, NULL);
    b = sip_fcgi_encode_request(p, 1, 1, env, "body", 4, &len);
    sip_fcgi_set_id(b, len, 0x1234);
    while (pos < len) {
        const unsigned char *h = (const unsigned char *)b + pos;
        ck_assert_int_eq(h[2], 0x12);
        ck_assert_int_eq(h[3], 0x34);
        pos += 8 + ((apr_size_t)h[4] << 8 | h[5]) + h[6];
        records++;
    }
    ck_assert_uint_eq(pos, len);
    ck_assert_uint_eq(records, 5);     /* BEGIN, PARAMS, PARAMS end, STDIN, STDIN end */
    len = sip_fcgi_encode_get_values(gv);
    ck_assert_uint_le(len, sizeof(gv));
    ck_assert_uint_eq(len % 8, 0);
    ck_assert_int_eq(gv[1], AP_FCGI_GET_VALUES);
    ck_assert_int_eq(gv[2] | gv[3], 0);
    t = apr_table_make(p, 2);
    ck_assert_int_eq(sip_fcgi_decode_params(p, gv + 8, (apr_size_t)(gv[4] << 8 | gv[5]), t, &why),
                     0);
    ck_assert_str_eq(apr_table_get(t, "FCGI_MPXS_CONNS"), "");
    ck_assert_str_eq(apr_table_get(t, "FCGI_MAX_REQS"), "");
    apr_pool_destroy(p);
}
END_TEST

static Suite *fcgi_suite(void)
{
    Suite *s = suite_create("fcgi");
    TCase *tc = tcase_create("records");

    tcase_add_test(tc, fcgi_encode_request_roundtrip);
    tcase_add_test(tc, fcgi_parse_answer);
    tcase_add_test(tc, fcgi_parse_malformed);
    tcase_add_test(tc, fcgi_directives_and_lookup);
    tcase_add_test(tc, fcgi_demux_interleaved);
    tcase_add_test(tc, fcgi_set_id_and_get_values);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- issue 19: the derived To tag of an OPTIONS answered without state ---- */

static const char *stateless_tag_of(const char *branch, const char *callid, const char *ftag,
                                    int cseq)
{
    const char *text = apr_psprintf(pool,
        "OPTIONS sip:nobody@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=%s\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=%s\r\nTo: <sip:nobody@127.0.0.1>\r\n"
        "Call-ID: %s\r\nCSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n", branch, ftag, callid, cseq);
    sip_msg_t *m = NULL;
    sip_msg_error_t err;

    ck_assert_int_eq(sip_msg_parse(pool, text, strlen(text), NULL, 1, &m, &err), APR_SUCCESS);
    return derived_tag(pool, m, txn_key(pool, m, "OPTIONS"));
}

START_TEST(stateless_tag_derivation)
{
    const char *t1, *t2;

    sip_txn_set_tag_secret("secret one", 10);
    t1 = stateless_tag_of("z9hG4bKa1", "c1@h", "f1", 1);
    ck_assert_int_eq(strlen(t1), 16);
    ck_assert_int_eq(strspn(t1, "0123456789abcdef"), 16);
    /* a retransmission: the same tag */
    ck_assert_str_eq(stateless_tag_of("z9hG4bKa1", "c1@h", "f1", 1), t1);
    /* every other request: another one */
    ck_assert_str_ne(stateless_tag_of("z9hG4bKa2", "c1@h", "f1", 1), t1);
    ck_assert_str_ne(stateless_tag_of("z9hG4bKa1", "c2@h", "f1", 1), t1);
    ck_assert_str_ne(stateless_tag_of("z9hG4bKa1", "c1@h", "f2", 1), t1);
    ck_assert_str_ne(stateless_tag_of("z9hG4bKa1", "c1@h", "f1", 2), t1);
    /* an RFC 2543 client (no magic cookie) is told apart by its fields */
    t2 = stateless_tag_of("old1", "c1@h", "f1", 1);
    ck_assert_str_eq(stateless_tag_of("old1", "c1@h", "f1", 1), t2);
    ck_assert_str_ne(stateless_tag_of("old1", "c1@h", "f1", 2), t2);
    /* nobody without the secret can compute it */
    sip_txn_set_tag_secret("secret two", 10);
    ck_assert_str_ne(stateless_tag_of("z9hG4bKa1", "c1@h", "f1", 1), t1);
    ck_assert(stateless_method("OPTIONS"));
    ck_assert(!stateless_method("REGISTER") && !stateless_method("INVITE")
              && !stateless_method("MESSAGE"));
}
END_TEST

static Suite *stateless_suite(void)
{
    Suite *s = suite_create("stateless");
    TCase *tc = tcase_create("to-tag");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, stateless_tag_derivation);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- natob (issue 17): NAT reach, RFC 5626 §6 identity, journal v3 ---- */

static sip_reach_t nat_reach(const char *contact, int transport, const char *received, int open,
                             int mode)
{
    sip_binding_t b;

    memset(&b, 0, sizeof(b));
    b.contact = contact;
    b.transport = transport;
    b.received = received;
    b.flow = 42;
    return sip_binding_reach_mode(pool, &b, open, mode);
}

START_TEST(natob_private_addresses)
{
    const char *yes[] = {"10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1",
                         "169.254.3.4", "100.64.0.1", "100.127.255.254", "0.0.0.0", "::1",
                         "[::1]", "fe80::1", "fd00::5", "::ffff:192.168.0.1", NULL};
    const char *no[] = {"172.32.0.1", "192.0.2.1", "100.128.0.1", "8.8.8.8", "2001:db8::1",
                        "example.com", "[fe80::1", "", NULL};
    int i;

    for (i = 0; yes[i]; i++)
        ck_assert_msg(sip_addr_is_private(yes[i]), "%s is private", yes[i]);
    for (i = 0; no[i]; i++)
        ck_assert_msg(!sip_addr_is_private(no[i]), "%s is not private", no[i]);
}
END_TEST

START_TEST(natob_reach_modes)
{
    /* UDP, auto: a private Contact other than the source -> the source */
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5:5060", SIP_TP_UDP, "127.0.0.1:40000", 0,
                               SIP_NAT_AUTO), SIP_REACH_SOURCE);
    /* ... the same address (a LAN), a public one, a name: the Contact */
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5:5060", SIP_TP_UDP, "10.0.0.5:40000", 0,
                               SIP_NAT_AUTO), SIP_REACH_CONTACT);
    ck_assert_int_eq(nat_reach("sip:p@[::1]:5060", SIP_TP_UDP, "[0:0::1]:4000", 0,
                               SIP_NAT_AUTO), SIP_REACH_CONTACT);
    ck_assert_int_eq(nat_reach("sip:p@192.0.2.7", SIP_TP_UDP, "127.0.0.1:4000", 0,
                               SIP_NAT_AUTO), SIP_REACH_CONTACT);
    ck_assert_int_eq(nat_reach("sip:p@phone.example.com", SIP_TP_UDP, "127.0.0.1:4000", 0,
                               SIP_NAT_AUTO), SIP_REACH_CONTACT);
    /* ;ob: the source; no source known (an old journal): the Contact */
    ck_assert_int_eq(nat_reach("sip:p@192.0.2.7;ob", SIP_TP_UDP, "127.0.0.1:4000", 0,
                               SIP_NAT_AUTO), SIP_REACH_SOURCE);
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5", SIP_TP_UDP, NULL, 0, SIP_NAT_AUTO),
                     SIP_REACH_CONTACT);
    /* always / off */
    ck_assert_int_eq(nat_reach("sip:p@192.0.2.7", SIP_TP_UDP, "127.0.0.1:4000", 0,
                               SIP_NAT_ALWAYS), SIP_REACH_SOURCE);
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5", SIP_TP_UDP, "127.0.0.1:4000", 0,
                               SIP_NAT_OFF), SIP_REACH_CONTACT);
    /* TCP: the flow while open; closed with a NATed Contact: nothing */
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5;transport=tcp", SIP_TP_TCP, "127.0.0.1:4000", 1,
                               SIP_NAT_AUTO), SIP_REACH_FLOW);
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5;transport=tcp", SIP_TP_TCP, "127.0.0.1:4000", 0,
                               SIP_NAT_AUTO), SIP_REACH_NONE);
    ck_assert_int_eq(nat_reach("sip:p@10.0.0.5;transport=tcp", SIP_TP_TCP, "127.0.0.1:4000", 0,
                               SIP_NAT_OFF), SIP_REACH_CONTACT);
    ck_assert_int_eq(nat_reach("sip:p@192.0.2.7;transport=tcp", SIP_TP_TCP, "127.0.0.1:4000", 0,
                               SIP_NAT_ALWAYS), SIP_REACH_NONE);
    /* WebSocket is never redialled, whatever the mode */
    ck_assert_int_eq(nat_reach("sip:p@x.invalid;transport=ws", SIP_TP_UDP, "127.0.0.1:4000", 0,
                               SIP_NAT_ALWAYS), SIP_REACH_NONE);
}
END_TEST

START_TEST(natob_outbound_and_path)
{
    sip_binding_t b;

    memset(&b, 0, sizeof(b));
    b.contact = "sip:p@192.0.2.7;transport=tcp";
    b.transport = SIP_TP_TCP;
    b.received = "192.0.2.7:3333";
    b.instance = "urn:uuid:1";
    b.reg_id = 1;
    b.flow = 9;
    /* RFC 5626 §5.3: an outbound flow that closed is not redialled */
    ck_assert_int_eq(sip_binding_reach(pool, &b, 0), SIP_REACH_NONE);
    ck_assert_int_eq(sip_binding_reach(pool, &b, 1), SIP_REACH_FLOW);
    b.transport = SIP_TP_UDP;
    ck_assert_int_eq(sip_binding_reach(pool, &b, 0), SIP_REACH_SOURCE);
    /* RFC 3327: through the Path, whatever the Contact */
    b.path = "<sip:edge.example.com;lr;ob>";
    ck_assert_int_eq(sip_binding_reach(pool, &b, 0), SIP_REACH_CONTACT);
    b.transport = SIP_TP_TCP;
    ck_assert_int_eq(sip_binding_reach(pool, &b, 0), SIP_REACH_CONTACT);
}
END_TEST

START_TEST(natob_identity)
{
    sip_binding_t b = mkb("sip:a@h", "sip:a@10.0.0.1:5060;transport=tcp", "c1", 1, 600, 1000);
    apr_array_header_t *cur;

    /* without an instance: the URI; with one: (instance, reg-id) */
    ck_assert_str_eq(sip_binding_identity(pool, &b), sip_uri_key(pool, b.contact));
    b.instance = "urn:uuid:1";
    b.reg_id = 1;
    ck_assert_str_eq(sip_binding_identity(pool, &b), "\1urn:uuid:1\0011");
    set_binding(&b, 0);
    /* the same instance and reg-id with another Contact replaces it */
    b = mkb("sip:a@h", "sip:a@10.0.0.9:7000;transport=tcp", "c2", 1, 600, 1000);
    b.instance = "urn:uuid:1";
    b.reg_id = 1;
    b.received = "127.0.0.1:4444";
    set_binding(&b, 0);
    ck_assert_uint_eq(sip_location_count(), 1);
    /* another reg-id: a second flow of the instance, same Contact */
    b.reg_id = 2;
    set_binding(&b, 0);
    ck_assert_uint_eq(sip_location_count(), 2);
    cur = sip_location_lookup(pool, "sip:a@h");
    ck_assert_int_eq(cur->nelts, 2);
    ck_assert_str_eq(APR_ARRAY_IDX(cur, 0, sip_binding_t *)->contact,
                     "sip:a@10.0.0.9:7000;transport=tcp");
    ck_assert_str_eq(APR_ARRAY_IDX(cur, 0, sip_binding_t *)->received, "127.0.0.1:4444");
    /* removing flow 1 by its name leaves flow 2 */
    b.reg_id = 1;
    b.expires = 0;
    set_binding(&b, 0);
    cur = sip_location_lookup(pool, "sip:a@h");
    ck_assert_int_eq(cur->nelts, 1);
    ck_assert_int_eq(APR_ARRAY_IDX(cur, 0, sip_binding_t *)->reg_id, 2);
}
END_TEST

START_TEST(natob_journal_v3)
{
    apr_time_t now = apr_time_from_sec(1000000);
    journal_rec_t r;

    ck_assert_int_eq(parse_line("V\t3", 1, now, &r), 'V');
    ck_assert_int_eq(r.version, 3);
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@10.0.0.5\t;+sip.instance=\"<urn:u:1>\";reg-id=2"
                                "\tcid\t7\t1000000000000\t500\t\t\ttcp\t127.0.0.1:4000\turn:u:1\t2",
                                3, now, &r), 'B');
    ck_assert_int_eq(r.b.transport, SIP_TP_TCP);
    ck_assert_str_eq(r.b.received, "127.0.0.1:4000");
    ck_assert_str_eq(r.b.instance, "urn:u:1");
    ck_assert_int_eq(r.b.reg_id, 2);
    /* UDP: an empty transport field */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@10.0.0.5\t\tcid\t7\t1000000000000\t500\t\t"
                                "\t\t[::1]:5\t\t0", 3, now, &r), 'B');
    ck_assert_int_eq(r.b.transport, SIP_TP_UDP);
    ck_assert_str_eq(r.b.received, "[::1]:5");
    ck_assert_ptr_null(r.b.instance);
    /* a reg-id without an instance is none (RFC 5626 §6) */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@10.0.0.5\t\tcid\t7\t1000000000000\t500\t\t"
                                "\t\t1.2.3.4:5\t\t7", 3, now, &r), 'B');
    ck_assert_int_eq(r.b.reg_id, 0);
    /* a version 2 line: nothing of it */
    ck_assert_int_eq(parse_line("B\tsip:a@h\tsip:a@1.2.3.4\t\tcid\t7\t1000000000000\t500\t\t\ttcp",
                                2, now, &r), 'B');
    ck_assert_ptr_null(r.b.received);
    ck_assert_ptr_null(r.b.instance);
    /* D lines name an instance's binding */
    ck_assert_int_eq(parse_line("D\tsip:a@h\tsip:a@10.0.0.5\turn:u:1\t2", 3, now, &r), 'D');
    ck_assert_str_eq(r.b.instance, "urn:u:1");
    ck_assert_int_eq(r.b.reg_id, 2);
}
END_TEST

static Suite *natob_suite(void)
{
    Suite *s = suite_create("natob");
    TCase *tc = tcase_create("natob");

    tcase_add_checked_fixture(tc, store_setup, pool_teardown);
    tcase_add_test(tc, natob_private_addresses);
    tcase_add_test(tc, natob_reach_modes);
    tcase_add_test(tc, natob_outbound_and_path);
    tcase_add_test(tc, natob_identity);
    tcase_add_test(tc, natob_journal_v3);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- STUN (sip_stun.c): RFC 5769 test vectors, RFC 5389 rules ---- */

/* RFC 5769 §2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED,
 * USERNAME, MESSAGE-INTEGRITY, FINGERPRINT) */
static const unsigned char stun_rfc5769_req[] = {
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01,
    0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10,
    0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c,
    0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
    0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
    0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c,
    0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
};
/* RFC 5769 §2.2 and §2.3: the XOR-MAPPED-ADDRESS attributes of the sample
 * responses (192.0.2.1:32853 and 2001:db8:1234:5678:11:2233:4455:6677 port
 * 32853), and the FINGERPRINTs of the whole responses */
static const unsigned char stun_xma4[] = {
    0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
};
static const unsigned char stun_xma6[] = {
    0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
};
static const unsigned char stun_rfc5769_resp4[] = {
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01,
    0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b,
    0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20,
    0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
    0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7,
    0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
};

static apr_uint32_t stun_be32(const unsigned char *p)
{
    return (apr_uint32_t)p[0] << 24 | (apr_uint32_t)p[1] << 16 | (apr_uint32_t)p[2] << 8 | p[3];
}

START_TEST(stun_rfc5769_vectors)
{
    sip_stun_req_t req;
    unsigned char buf[sizeof(stun_rfc5769_req)];

    /* the FINGERPRINT of each vector, over the bytes before it */
    ck_assert_uint_eq(sip_stun_fingerprint(stun_rfc5769_req, sizeof(stun_rfc5769_req) - 8),
                      0xe57a3bcfu);
    ck_assert_uint_eq(sip_stun_fingerprint(stun_rfc5769_resp4, sizeof(stun_rfc5769_resp4) - 8),
                      0xc07d4c96u);
    /* an ICE connectivity check is a Binding request: answered, its known
     * comprehension-required attributes (PRIORITY, USERNAME, MESSAGE-
     * INTEGRITY) ignored, no credentials checked (RFC 5626 §8) */
    ck_assert_int_eq(sip_stun_parse(stun_rfc5769_req, sizeof(stun_rfc5769_req), &req),
                     SIP_STUN_ANSWER);
    ck_assert_int_eq(req.fingerprint, 1);
    ck_assert_int_eq(req.n_unknown, 0);
    ck_assert(memcmp(req.txid, stun_rfc5769_req + 8, 12) == 0);
    /* one bit changed anywhere: the FINGERPRINT no longer matches */
    memcpy(buf, stun_rfc5769_req, sizeof(buf));
    buf[30] ^= 0x01;
    ck_assert_int_eq(sip_stun_parse(buf, sizeof(buf), &req), SIP_STUN_DROP);
    ck_assert_str_eq(req.why, "bad STUN FINGERPRINT");
    /* a response is never answered */
    ck_assert_int_eq(sip_stun_parse(stun_rfc5769_resp4, sizeof(stun_rfc5769_resp4), &req),
                     SIP_STUN_DROP);
    ck_assert_str_eq(req.why, "STUN response");
}
END_TEST

START_TEST(stun_answer_xor_mapped)
{
    sip_stun_req_t req;
    sip_sockaddr_t a;
    unsigned char out[SIP_STUN_MAX_ANSWER], small[8];
    apr_size_t n;

    memset(&req, 0, sizeof(req));
    memcpy(req.txid, stun_rfc5769_req + 8, 12);
    /* IPv4, no FINGERPRINT asked: header + XOR-MAPPED-ADDRESS only */
    ck_assert_int_eq(sip_sockaddr_set(&a, "192.0.2.1", 32853), APR_SUCCESS);
    n = sip_stun_answer(&req, (struct sockaddr *)&a.ss, out, sizeof(out));
    ck_assert_uint_eq(n, 20 + sizeof(stun_xma4));
    ck_assert(out[0] == 0x01 && out[1] == 0x01 && out[2] == 0 && out[3] == 12);
    ck_assert_uint_eq(stun_be32(out + 4), SIP_STUN_MAGIC);
    ck_assert(memcmp(out + 8, req.txid, 12) == 0);
    ck_assert(memcmp(out + 20, stun_xma4, sizeof(stun_xma4)) == 0);
    /* what the server answers parses back as a (dropped) response */
    ck_assert_int_eq(sip_stun_parse(out, n, &req), SIP_STUN_DROP);
    /* IPv6, with FINGERPRINT: it is last, and right */
    memset(&req, 0, sizeof(req));
    memcpy(req.txid, stun_rfc5769_req + 8, 12);
    req.fingerprint = 1;
    ck_assert_int_eq(sip_sockaddr_set(&a, "2001:db8:1234:5678:11:2233:4455:6677", 32853),
                     APR_SUCCESS);
    n = sip_stun_answer(&req, (struct sockaddr *)&a.ss, out, sizeof(out));
    ck_assert_uint_eq(n, 20 + sizeof(stun_xma6) + 8);
    ck_assert_uint_eq(out[3], sizeof(stun_xma6) + 8);
    ck_assert(memcmp(out + 20, stun_xma6, sizeof(stun_xma6)) == 0);
    ck_assert(out[n - 8] == 0x80 && out[n - 7] == 0x28 && out[n - 5] == 4);
    ck_assert_uint_eq(stun_be32(out + n - 4), sip_stun_fingerprint(out, n - 8));
    ck_assert_int_eq(sip_stun_parse(out, n, &req), SIP_STUN_DROP);
    ck_assert_str_eq(req.why, "STUN response");     /* so the FINGERPRINT was accepted */
    /* an IPv4 client of a dual-stack socket is mapped as IPv4 */
    memset(&req, 0, sizeof(req));
    memcpy(req.txid, stun_rfc5769_req + 8, 12);
    ck_assert_int_eq(sip_sockaddr_set(&a, "::ffff:192.0.2.1", 32853), APR_SUCCESS);
    n = sip_stun_answer(&req, (struct sockaddr *)&a.ss, out, sizeof(out));
    ck_assert_uint_eq(n, 20 + sizeof(stun_xma4));
    ck_assert(memcmp(out + 20, stun_xma4, sizeof(stun_xma4)) == 0);
    /* no room: nothing */
    ck_assert_uint_eq(sip_stun_answer(&req, (struct sockaddr *)&a.ss, small, sizeof(small)), 0);
}
END_TEST

START_TEST(stun_demultiplex_and_drop)
{
    static const char sip[] = "OPTIONS sip:x SIP/2.0\r\n";
    unsigned char m[40], out[SIP_STUN_MAX_ANSWER];
    sip_stun_req_t req;
    sip_sockaddr_t a;
    apr_size_t n;

    /* SIP text, and CRLF keep-alives, are not STUN */
    ck_assert_int_eq(sip_stun_parse((const unsigned char *)sip, strlen(sip), &req),
                     SIP_STUN_NONE);
    ck_assert_int_eq(sip_stun_parse((const unsigned char *)"\r\n\r\n", 4, &req), SIP_STUN_NONE);
    ck_assert_int_eq(sip_stun_parse(m, 0, &req), SIP_STUN_NONE);
    /* a bare Binding request (RFC 5626 §8 needs no attribute) */
    memset(m, 0, sizeof(m));
    m[1] = 0x01;
    m[4] = 0x21; m[5] = 0x12; m[6] = 0xa4; m[7] = 0x42;
    memset(m + 8, 0x5a, 12);
    ck_assert_int_eq(sip_stun_parse(m, 20, &req), SIP_STUN_ANSWER);
    ck_assert_int_eq(req.fingerprint, 0);
    /* too short, a wrong cookie (RFC 3489), a length that is not the
     * datagram's or not a multiple of 4 */
    ck_assert_int_eq(sip_stun_parse(m, 19, &req), SIP_STUN_DROP);
    m[7] = 0x43;
    ck_assert_int_eq(sip_stun_parse(m, 20, &req), SIP_STUN_DROP);
    m[7] = 0x42;
    m[3] = 4;
    ck_assert_int_eq(sip_stun_parse(m, 20, &req), SIP_STUN_DROP);
    m[3] = 2;
    ck_assert_int_eq(sip_stun_parse(m, 22, &req), SIP_STUN_DROP);
    /* an attribute running past the end */
    m[3] = 4;
    m[20] = 0x80; m[21] = 0x22; m[22] = 0; m[23] = 8;
    ck_assert_int_eq(sip_stun_parse(m, 24, &req), SIP_STUN_DROP);
    ck_assert_str_eq(req.why, "malformed STUN attribute");
    /* a Binding indication (a keep-alive that wants no answer), another
     * method */
    m[3] = 0;
    m[1] = 0x11;
    ck_assert_int_eq(sip_stun_parse(m, 20, &req), SIP_STUN_DROP);
    ck_assert_str_eq(req.why, "STUN indication");
    m[1] = 0x03;    /* Allocate (TURN) */
    ck_assert_int_eq(sip_stun_parse(m, 20, &req), SIP_STUN_DROP);
    ck_assert_str_eq(req.why, "STUN request of another method");
    /* FINGERPRINT not last */
    m[1] = 0x01;
    m[3] = 16;
    m[20] = 0x80; m[21] = 0x28; m[22] = 0; m[23] = 4;
    m[28] = 0x80; m[29] = 0x22; m[30] = 0; m[31] = 4;
    ck_assert_int_eq(sip_stun_parse(m, 36, &req), SIP_STUN_DROP);
    /* CHANGE-REQUEST (RFC 3489, comprehension-required, unknown here):
     * 420 naming it (RFC 5389 §7.3.1) */
    m[3] = 8;
    m[20] = 0x00; m[21] = 0x03; m[22] = 0; m[23] = 4;
    memset(m + 24, 0, 4);
    ck_assert_int_eq(sip_stun_parse(m, 28, &req), SIP_STUN_ANSWER);
    ck_assert_int_eq(req.n_unknown, 1);
    ck_assert_int_eq(req.unknown[0], 0x0003);
    sip_sockaddr_set(&a, "127.0.0.1", 5060);
    n = sip_stun_answer(&req, (struct sockaddr *)&a.ss, out, sizeof(out));
    ck_assert(out[0] == 0x01 && out[1] == 0x11);
    ck_assert_uint_eq(n, 20 + 4 + 24 + 4 + 4);     /* the 17-byte reason padded to 20 */
    ck_assert(out[20] == 0x00 && out[21] == 0x09 && out[26] == 4 && out[27] == 20);
    ck_assert(memcmp(out + 28, "Unknown Attribute", 17) == 0);
    ck_assert(out[45] == 0);        /* padding */
    ck_assert(out[48] == 0x00 && out[49] == 0x0a && out[51] == 2 && out[52] == 0 && out[53] == 3);
    ck_assert_uint_eq(out[3], n - 20);
}
END_TEST

/* Where the answers to a request go (RFC 3261 §18.2.2, RFC 3581 §4):
 * UDP at received:rport; TCP and TLS, should the connection close, at
 * received and the sent-by port (or 5060/5061), never rport; WebSocket at
 * the peer only. */
START_TEST(rport_response_dest)
{
    static const struct {
        sip_tp_kind_t kind;
        const char *via;
        const char *ip;
        int port;
    } cases[] = {
        {SIP_TP_UDP, "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKa", "127.0.0.1", 40000},
        {SIP_TP_UDP, "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa", "127.0.0.1", 5070},
        {SIP_TP_UDP, "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa", "127.0.0.1", 5060},
        {SIP_TP_TCP, "SIP/2.0/TCP 10.0.0.1:5070;rport;branch=z9hG4bKa", "127.0.0.1", 5070},
        {SIP_TP_TCP, "SIP/2.0/TCP 10.0.0.1;rport;branch=z9hG4bKa", "127.0.0.1", 5060},
        {SIP_TP_TLS, "SIP/2.0/TLS 10.0.0.1;rport;branch=z9hG4bKa", "127.0.0.1", 5061},
        {SIP_TP_TLS, "SIP/2.0/TLS 10.0.0.1:5071;branch=z9hG4bKa", "127.0.0.1", 5071},
        {SIP_TP_WS, "SIP/2.0/WS x.invalid;rport;branch=z9hG4bKa", "127.0.0.1", 40000},
        {SIP_TP_WSS, "SIP/2.0/WSS x.invalid:5080;branch=z9hG4bKa", "127.0.0.1", 40000},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = apr_psprintf(pool, "OPTIONS sip:bob@a.example SIP/2.0\r\nVia: %s\r\n"
                                      "Max-Forwards: 10\r\nFrom: <sip:a@x>;tag=1\r\n"
                                      "To: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
                                      "Content-Length: 0\r\n\r\n", cases[i].via);
        sip_msg_t *m = parse_ok(in);
        sip_source_t src;
        sip_sockaddr_t dest;

        memset(&src, 0, sizeof(src));
        src.kind = cases[i].kind;
        ck_assert_int_eq(sip_sockaddr_set(&src.peer, "127.0.0.1", 40000), APR_SUCCESS);
        sip_msg_stamp_via(m, &src, &dest);
        ck_assert_msg(strcmp(sip_sockaddr_ip(pool, &dest), cases[i].ip) == 0
                      && sip_sockaddr_port(&dest) == cases[i].port, "%s: %s:%d", cases[i].via,
                      sip_sockaddr_ip(pool, &dest), sip_sockaddr_port(&dest));
    }
}
END_TEST

static Suite *stun_suite(void)
{
    Suite *s = suite_create("stun");
    TCase *tc = tcase_create("binding");

    tcase_add_test(tc, stun_rfc5769_vectors);
    tcase_add_test(tc, stun_answer_xor_mapped);
    tcase_add_test(tc, stun_demultiplex_and_drop);
    suite_add_tcase(s, tc);
    tc = tcase_create("rport");
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, rport_response_dest);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- DNS (sip_dns.c): answer parsing, RFC 3263 / RFC 2782 ordering, and
 * the resolver itself against t/lib/sipdns.py on a real event loop ---- */

typedef struct dnsb {
    unsigned char b[4096];
    int n, counts[3], rdlen_at;
} dnsb_t;

static void dnsb_16(dnsb_t *m, unsigned v) { m->b[m->n++] = (unsigned char)(v >> 8); m->b[m->n++] = (unsigned char)v; }
static void dnsb_32(dnsb_t *m, unsigned v) { dnsb_16(m, v >> 16); dnsb_16(m, v & 0xffff); }
static void dnsb_name(dnsb_t *m, const char *name)
{
    while (*name) {
        size_t l = strcspn(name, ".");
        m->b[m->n++] = (unsigned char)l;
        memcpy(m->b + m->n, name, l);
        m->n += (int)l;
        name += l;
        if (*name == '.')
            name++;
    }
    m->b[m->n++] = 0;
}
static void dnsb_str(dnsb_t *m, const char *s)
{
    m->b[m->n++] = (unsigned char)strlen(s);
    memcpy(m->b + m->n, s, strlen(s));
    m->n += (int)strlen(s);
}
static void dnsb_start(dnsb_t *m, int rcode, const char *qname, int qtype)
{
    memset(m, 0, sizeof(*m));
    dnsb_16(m, 0x1234);
    dnsb_16(m, 0x8400 | (unsigned)rcode);
    dnsb_16(m, 1);
    m->n = 12;
    dnsb_name(m, qname);
    dnsb_16(m, (unsigned)qtype);
    dnsb_16(m, ns_c_in);
}
/* section 0 = answer, 1 = authority */
static void dnsb_rr(dnsb_t *m, int sect, const char *name, int type, unsigned ttl)
{
    dnsb_name(m, name);
    dnsb_16(m, (unsigned)type);
    dnsb_16(m, ns_c_in);
    dnsb_32(m, ttl);
    m->rdlen_at = m->n;
    dnsb_16(m, 0);
    m->counts[sect]++;
}
static int dnsb_end_rr(dnsb_t *m)
{
    int l = m->n - m->rdlen_at - 2;
    m->b[m->rdlen_at] = (unsigned char)(l >> 8);
    m->b[m->rdlen_at + 1] = (unsigned char)l;
    m->b[6] = 0; m->b[7] = (unsigned char)m->counts[0];
    m->b[8] = 0; m->b[9] = (unsigned char)m->counts[1];
    return m->n;
}

START_TEST(dns_parse_answers)
{
    apr_pool_t *p;
    dnsb_t m;
    dns_answer_t a;
    const dns_naptr_t *nr;
    const dns_srv_t *sr;

    apr_pool_create(&p, NULL);
    dnsb_start(&m, 0, "example.test", ns_t_naptr);
    dnsb_rr(&m, 0, "example.test", ns_t_naptr, 300);
    dnsb_16(&m, 20); dnsb_16(&m, 5); dnsb_str(&m, "s"); dnsb_str(&m, "SIP+D2T"); dnsb_str(&m, "");
    dnsb_name(&m, "_sip._tcp.example.test");
    dnsb_end_rr(&m);
    dnsb_rr(&m, 0, "example.test", ns_t_naptr, 120);
    dnsb_16(&m, 10); dnsb_16(&m, 50); dnsb_str(&m, "S"); dnsb_str(&m, "SIPS+D2T"); dnsb_str(&m, "");
    dnsb_name(&m, "_sips._tcp.example.test");
    dnsb_end_rr(&m);
    ck_assert_int_eq(dns_parse(p, ns_t_naptr, m.b, m.n, &a), SIP_DNS_DONE);
    ck_assert_int_eq(a.recs->nelts, 2);
    ck_assert_int_eq(a.ttl, 120);       /* the smallest TTL */
    nr = &APR_ARRAY_IDX(a.recs, 0, dns_naptr_t);
    ck_assert_int_eq(nr->order, 20);
    ck_assert_int_eq(nr->pref, 5);
    ck_assert_str_eq(nr->service, "SIP+D2T");
    ck_assert_str_eq(nr->replacement, "_sip._tcp.example.test");

    dnsb_start(&m, 0, "_sip._udp.example.test", ns_t_srv);
    dnsb_rr(&m, 0, "_sip._udp.example.test", ns_t_srv, 200000);
    dnsb_16(&m, 1); dnsb_16(&m, 7); dnsb_16(&m, 5070); dnsb_name(&m, "a.example.test");
    dnsb_end_rr(&m);
    ck_assert_int_eq(dns_parse(p, ns_t_srv, m.b, m.n, &a), SIP_DNS_DONE);
    ck_assert_int_eq(a.ttl, DNS_MAX_TTL);   /* capped */
    sr = &APR_ARRAY_IDX(a.recs, 0, dns_srv_t);
    ck_assert_int_eq(sr->prio, 1);
    ck_assert_int_eq(sr->weight, 7);
    ck_assert_int_eq(sr->port, 5070);
    ck_assert_str_eq(sr->target, "a.example.test");

    dnsb_start(&m, 0, "a.example.test", ns_t_a);
    dnsb_rr(&m, 0, "a.example.test", ns_t_a, 60);
    dnsb_32(&m, 0x7f000002);
    dnsb_end_rr(&m);
    dnsb_rr(&m, 0, "a.example.test", ns_t_aaaa, 60);        /* another type: ignored */
    { int i; for (i = 0; i < 4; i++) dnsb_32(&m, i == 3 ? 1 : 0); }
    dnsb_end_rr(&m);
    ck_assert_int_eq(dns_parse(p, ns_t_a, m.b, m.n, &a), SIP_DNS_DONE);
    ck_assert_int_eq(a.recs->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(a.recs, 0, const char *), "127.0.0.2");
    ck_assert_int_eq(dns_parse(p, ns_t_aaaa, m.b, m.n, &a), SIP_DNS_DONE);
    ck_assert_str_eq(APR_ARRAY_IDX(a.recs, 0, const char *), "::1");

    /* NODATA with a SOA: negative TTL = min(SOA TTL, MINIMUM) (RFC 2308 §5) */
    dnsb_start(&m, 3, "nope.example.test", ns_t_a);
    dnsb_rr(&m, 1, "example.test", ns_t_soa, 900);
    dnsb_name(&m, "ns.example.test"); dnsb_name(&m, "hostmaster.example.test");
    dnsb_32(&m, 1); dnsb_32(&m, 3600); dnsb_32(&m, 600); dnsb_32(&m, 86400); dnsb_32(&m, 30);
    dnsb_end_rr(&m);
    ck_assert_int_eq(dns_parse(p, ns_t_a, m.b, m.n, &a), SIP_DNS_NOTFOUND);
    ck_assert_int_eq(a.ttl, 30);

    /* malformed: an A record of 3 bytes, a truncated message */
    dnsb_start(&m, 0, "a.example.test", ns_t_a);
    dnsb_rr(&m, 0, "a.example.test", ns_t_a, 60);
    m.b[m.n++] = 1; m.b[m.n++] = 2; m.b[m.n++] = 3;
    dnsb_end_rr(&m);
    ck_assert_int_eq(dns_parse(p, ns_t_a, m.b, m.n, &a), SIP_DNS_FAILED);
    ck_assert_int_eq(dns_parse(p, ns_t_a, m.b, 20, &a), SIP_DNS_FAILED);
    ck_assert_int_eq(dns_parse(p, ns_t_a, NULL, 0, &a), SIP_DNS_FAILED);
    apr_pool_destroy(p);
}
END_TEST

static dns_naptr_t naptr_rec(int order, int pref, const char *flags, const char *svc,
                             const char *repl)
{
    dns_naptr_t r = { order, pref, flags, svc, "", repl };
    return r;
}

START_TEST(dns_naptr_filter_order)
{
    apr_pool_t *p;
    apr_array_header_t *in, *out;
    unsigned all = (1u << SIP_TP_UDP) | (1u << SIP_TP_TCP) | (1u << SIP_TP_TLS);
    int seen;

    apr_pool_create(&p, NULL);
    in = apr_array_make(p, 8, sizeof(dns_naptr_t));
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(30, 10, "s", "SIP+D2U", "_sip._udp.x.test");
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(10, 90, "s", "SIP+D2T", "_sip._tcp.x.test");
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(10, 50, "s", "SIPS+D2T", "_sips._tcp.x.test");
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(5, 10, "s", "SIP+D2W", "_sip._ws.x.test");
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(5, 10, "s", "SIPS+D2W", "_sips._ws.x.test");
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(1, 1, "u", "E2U+sip", "x.test");
    APR_ARRAY_PUSH(in, dns_naptr_t) = naptr_rec(2, 1, "a", "SIP+D2U", "host.x.test");
    out = dns_naptr_select(p, in, all, &seen);
    ck_assert_int_eq(seen, 1);
    ck_assert_int_eq(out->nelts, 3);        /* never WS, never a non-"s" record */
    ck_assert_str_eq(APR_ARRAY_IDX(out, 0, dns_srvq_t).name, "_sips._tcp.x.test");
    ck_assert_int_eq(APR_ARRAY_IDX(out, 0, dns_srvq_t).kind, SIP_TP_TLS);
    ck_assert_str_eq(APR_ARRAY_IDX(out, 1, dns_srvq_t).name, "_sip._tcp.x.test");
    ck_assert_int_eq(APR_ARRAY_IDX(out, 2, dns_srvq_t).kind, SIP_TP_UDP);
    /* sips: only SIPS+D2T */
    out = dns_naptr_select(p, in, 1u << SIP_TP_TLS, &seen);
    ck_assert_int_eq(out->nelts, 1);
    ck_assert_int_eq(APR_ARRAY_IDX(out, 0, dns_srvq_t).kind, SIP_TP_TLS);
    /* transport=udp with only TCP services: SIP records seen, none usable */
    in->nelts = 2;
    APR_ARRAY_IDX(in, 0, dns_naptr_t) = naptr_rec(10, 10, "s", "SIP+D2T", "_sip._tcp.x.test");
    out = dns_naptr_select(p, in, 1u << SIP_TP_UDP, &seen);
    ck_assert_int_eq(out->nelts, 0);
    ck_assert_int_eq(seen, 1);
    /* no SIP service at all: not "seen" (the caller falls back to SRV) */
    in->nelts = 1;
    APR_ARRAY_IDX(in, 0, dns_naptr_t) = naptr_rec(10, 10, "u", "E2U+sip", "!^.*$!sip:a@b!");
    out = dns_naptr_select(p, in, all, &seen);
    ck_assert_int_eq(out->nelts, 0);
    ck_assert_int_eq(seen, 0);
    apr_pool_destroy(p);
}
END_TEST

static dns_srv_t srv_rec(int prio, int weight, int port, const char *target)
{
    dns_srv_t r = { prio, weight, port, target };
    return r;
}

START_TEST(dns_srv_weights)
{
    apr_pool_t *p;
    apr_array_header_t *in, *out;
    int first[3] = { 0, 0, 0 }, zero_first = 0, i, runs = 20000;

    apr_pool_create(&p, NULL);
    srandom(12345);
    in = apr_array_make(p, 8, sizeof(dns_srv_t));
    APR_ARRAY_PUSH(in, dns_srv_t) = srv_rec(20, 0, 1, "backup.test");
    APR_ARRAY_PUSH(in, dns_srv_t) = srv_rec(10, 10, 2, "a.test");
    APR_ARRAY_PUSH(in, dns_srv_t) = srv_rec(10, 30, 3, "b.test");
    APR_ARRAY_PUSH(in, dns_srv_t) = srv_rec(10, 60, 4, "c.test");
    APR_ARRAY_PUSH(in, dns_srv_t) = srv_rec(20, 0, 5, "backup2.test");
    for (i = 0; i < runs; i++) {
        apr_pool_t *q;
        apr_pool_create(&q, p);
        out = dns_srv_order(q, in, dns_srv_random);
        ck_assert_int_eq(out->nelts, 5);
        /* priority 10 before priority 20, each record once */
        ck_assert_int_eq(APR_ARRAY_IDX(out, 3, dns_srv_t).prio, 20);
        ck_assert_int_eq(APR_ARRAY_IDX(out, 4, dns_srv_t).prio, 20);
        ck_assert_int_eq(APR_ARRAY_IDX(out, 0, dns_srv_t).port
                         + APR_ARRAY_IDX(out, 1, dns_srv_t).port
                         + APR_ARRAY_IDX(out, 2, dns_srv_t).port, 9);
        first[APR_ARRAY_IDX(out, 0, dns_srv_t).port - 2]++;
        zero_first += APR_ARRAY_IDX(out, 3, dns_srv_t).port == 1;
        apr_pool_destroy(q);
    }
    /* RFC 2782: the first pick in proportion to weight (10/30/60 %) */
    ck_assert_msg(abs(first[0] - runs / 10) < runs / 50, "weight 10 first %d", first[0]);
    ck_assert_msg(abs(first[1] - 3 * runs / 10) < runs / 50, "weight 30 first %d", first[1]);
    ck_assert_msg(abs(first[2] - 6 * runs / 10) < runs / 50, "weight 60 first %d", first[2]);
    /* two weight-0 records: each comes first sometimes */
    ck_assert_msg(zero_first > runs / 20 && zero_first < runs - runs / 20, "zero %d", zero_first);

    /* "." alone: the service is not offered */
    in->nelts = 0;
    APR_ARRAY_PUSH(in, dns_srv_t) = srv_rec(0, 0, 0, ".");
    ck_assert_int_eq(dns_srv_order(p, in, dns_srv_random)->nelts, 0);
    apr_pool_destroy(p);
}
END_TEST

START_TEST(dns_defaults_and_names)
{
    apr_pool_t *p;
    sip_uri_info_t u;
    apr_array_header_t *q, *out;
    sip_dns_query_t *h;
    sip_sockaddr_t a;
    const char *ip, *v;
    long cache;
    int d, tries;
    apr_interval_time_t to;

    apr_pool_create(&p, NULL);
    memset(&u, 0, sizeof(u));
    u.host = "example.test";
    ck_assert_uint_eq(dns_uri_transports(&u, -1, &d), 7u);
    ck_assert_int_eq(d, SIP_TP_UDP);            /* §4.1: UDP for sip: */
    u.secure = 1;
    ck_assert_uint_eq(dns_uri_transports(&u, -1, &d), 1u << SIP_TP_TLS);
    ck_assert_int_eq(d, SIP_TP_TLS);            /* TLS for sips: */
    u.transport = "udp";
    ck_assert_uint_eq(dns_uri_transports(&u, -1, &d), 0u);  /* sips over UDP: nothing */
    u.secure = 0;
    u.transport = "tcp";
    ck_assert_uint_eq(dns_uri_transports(&u, SIP_TP_UDP, &d), 1u << SIP_TP_TCP);
    u.transport = "sctp";
    ck_assert_uint_eq(dns_uri_transports(&u, -1, &d), 0u);
    u.transport = NULL;
    dns_uri_transports(&u, SIP_TP_TCP, &d);
    ck_assert_int_eq(d, SIP_TP_TCP);            /* the hint without a parameter */

    q = dns_srv_fallback(p, "x.test", 7u, SIP_TP_TCP);
    ck_assert_int_eq(q->nelts, 3);
    ck_assert_str_eq(APR_ARRAY_IDX(q, 0, dns_srvq_t).name, "_sip._tcp.x.test");
    ck_assert_str_eq(APR_ARRAY_IDX(q, 1, dns_srvq_t).name, "_sip._udp.x.test");
    ck_assert_str_eq(APR_ARRAY_IDX(q, 2, dns_srvq_t).name, "_sips._tcp.x.test");

    /* literal addresses and explicit ports need no DNS (no resolver here) */
    u.host = "[::1]";
    u.port = 0;
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &h, NULL, NULL), SIP_DNS_DONE);
    ck_assert_int_eq(sip_sockaddr_port(&APR_ARRAY_IDX(out, 0, sip_dns_target_t).addr), 5060);
    u.host = "example.test";
    u.maddr = "127.0.0.9";
    u.secure = 1;
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &h, NULL, NULL), SIP_DNS_DONE);
    ck_assert_int_eq(APR_ARRAY_IDX(out, 0, sip_dns_target_t).kind, SIP_TP_TLS);
    ck_assert_int_eq(sip_sockaddr_port(&APR_ARRAY_IDX(out, 0, sip_dns_target_t).addr), 5061);
    ck_assert_str_eq(APR_ARRAY_IDX(out, 0, sip_dns_target_t).host, "example.test");
    u.maddr = NULL;
    u.secure = 0;
    u.transport = "ws";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &h, NULL, NULL), SIP_DNS_NOTRANSPORT);

    sip_sockaddr_set(&a, "192.0.2.10", 5060);
    ck_assert_str_eq(dns_ptr_name(p, &a, &ip), "10.2.0.192.in-addr.arpa");
    ck_assert_str_eq(ip, "192.0.2.10");
    sip_sockaddr_set(&a, "::ffff:192.0.2.10", 5060);
    ck_assert_str_eq(dns_ptr_name(p, &a, &ip), "10.2.0.192.in-addr.arpa");
    sip_sockaddr_set(&a, "2001:db8::567:89ab", 5060);
    ck_assert_str_eq(dns_ptr_name(p, &a, &ip),
                     "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    ck_assert(dns_same_ip("::1", "0:0::1"));
    ck_assert(!dns_same_ip("127.0.0.1", "127.0.0.2"));

    /* directives */
    ck_assert_ptr_null(sip_dns_directive(p, "SipDNSServer", "127.0.0.1:5353, [::1]", &v, &to,
                                         &tries, &cache));
    ck_assert_str_eq(v, "127.0.0.1:5353,[::1]:53");
    ck_assert_ptr_nonnull(sip_dns_directive(p, "SipDNSServer", "dns.example.com", &v, &to,
                                            &tries, &cache));
    ck_assert_ptr_nonnull(sip_dns_directive(p, "SipDNSServer", "127.0.0.1:99999", &v, &to,
                                            &tries, &cache));
    ck_assert_ptr_null(sip_dns_directive(p, "SipDNSTimeout", "500ms", &v, &to, &tries, &cache));
    ck_assert_int_eq(to, apr_time_from_msec(500));
    ck_assert_ptr_nonnull(sip_dns_directive(p, "SipDNSTimeout", "0", &v, &to, &tries, &cache));
    ck_assert_ptr_nonnull(sip_dns_directive(p, "SipDNSTimeout", "2s", &v, &to, &tries, &cache));
    ck_assert_ptr_nonnull(sip_dns_directive(p, "SipDNSTries", "0", &v, &to, &tries, &cache));
    ck_assert_ptr_null(sip_dns_directive(p, "SipDNSCacheSize", "0", &v, &to, &tries, &cache));
    ck_assert_int_eq(cache, 0);
    ck_assert_ptr_nonnull(sip_dns_directive(p, "SipDNSCacheSize", "-1", &v, &to, &tries, &cache));
    apr_pool_destroy(p);
}
END_TEST

/* ---- the resolver on a loop, against t/lib/sipdns.py ---- */

typedef struct dnslive {
    pid_t pid;
    char dir[64];
    int port;
} dnslive_t;

static void dnslive_file(const dnslive_t *d, const char *name, const char *text)
{
    char path[128], tmp[140];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", d->dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(rename(tmp, path), 0);
}

static int dnslive_count(const dnslive_t *d, const char *name, const char *type)
{
    char path[128], line[512];
    FILE *f;
    int n = 0;

    snprintf(path, sizeof(path), "%s/log", d->dir);
    f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (t2 && !strncmp(t1 + 1, name, strlen(name)) && t1 + 1 + strlen(name) == t2
            && !strncmp(t2 + 1, type, strlen(type)) && t2[1 + strlen(type)] == '\t')
            n++;
    }
    fclose(f);
    return n;
}

static void dnslive_start(dnslive_t *d, const char *zone)
{
    char a[4][140];
    int i;

    strcpy(d->dir, "/tmp/sipdns-unit-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d->dir));
    dnslive_file(d, "zone", zone);
    dnslive_file(d, "control", "normal\n");
    dnslive_file(d, "log", "");
    snprintf(a[0], sizeof(a[0]), "%s/zone", d->dir);
    snprintf(a[1], sizeof(a[1]), "%s/control", d->dir);
    snprintf(a[2], sizeof(a[2]), "%s/log", d->dir);
    snprintf(a[3], sizeof(a[3]), "%s/port", d->dir);
    ck_assert_msg(access("t/lib/sipdns.py", R_OK) == 0, "run from the repository root");
    d->pid = fork();
    if (d->pid == 0) {
        execl("/usr/bin/python3", "python3", "t/lib/sipdns.py", "--zone", a[0], "--control",
              a[1], "--log", a[2], "--portfile", a[3], (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 200; i++) {
        FILE *f = fopen(a[3], "r");
        if (f) {
            int ok = fscanf(f, "%d", &d->port) == 1;
            fclose(f);
            if (ok)
                return;
        }
        usleep(50000);
    }
    ck_abort_msg("sipdns.py did not start");
}

static void dnslive_stop(dnslive_t *d)
{
    char cmd[128];
    kill(d->pid, SIGTERM);
    waitpid(d->pid, NULL, 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
    ck_assert_int_eq(system(cmd), 0);
}

typedef struct dnswait {
    volatile sig_atomic_t stop;
    int calls, status;
    apr_array_header_t *targets;
    const char *name;
    int verified;
    sip_timer_t guard;
} dnswait_t;

static void dnswait_cb(void *baton, int status, apr_array_header_t *targets, const char *why)
{
    dnswait_t *w = baton;
    w->calls++;
    w->status = status;
    w->targets = targets;
    w->stop = 1;
}

static void dnswait_name_cb(void *baton, const char *host, int verified)
{
    dnswait_t *w = baton;
    w->calls++;
    w->name = host;
    w->verified = verified;
    w->stop = 1;
}

static void dnswait_guard(void *baton)
{
    ((dnswait_t *)baton)->stop = 1;
}

static void dnswait_run(sip_loop_t *loop, dnswait_t *w, int secs)
{
    sip_timer_set(loop, &w->guard, apr_time_from_sec(secs), dnswait_guard, w);
    sip_loop_run(loop, &w->stop);
    sip_timer_cancel(loop, &w->guard);
    w->stop = 0;
}

static const char *target_text(apr_pool_t *p, const sip_dns_target_t *t)
{
    return apr_psprintf(p, "%s:%s:%d", sip_tp_via_name(t->kind), sip_sockaddr_ip(p, &t->addr),
                        sip_sockaddr_port(&t->addr));
}

static const char dns_zone[] =
    "$ORIGIN example.test.\n"
    "@ 60 IN SOA ns hostmaster 1 3600 600 86400 2\n"
    "@ 60 IN NAPTR 20 10 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.test.\n"
    "@ 60 IN NAPTR 10 10 \"s\" \"SIP+D2T\" \"\" _sip._tcp.example.test.\n"
    "@ 60 IN NAPTR 5 10 \"s\" \"SIP+D2W\" \"\" _sip._ws.example.test.\n"
    "_sip._tcp 60 IN SRV 10 0 5070 b\n"
    "_sip._tcp 60 IN SRV 20 0 5071 a\n"
    "_sip._udp 60 IN SRV 10 0 5072 a\n"
    "a 60 IN A 127.0.0.1\n"
    "a 60 IN A 127.0.0.3\n"
    "b 60 IN A 127.0.0.2\n"
    "b 60 IN AAAA ::1\n"
    "$ORIGIN nonaptr.test.\n"
    "@ 60 IN SOA ns hostmaster 1 3600 600 86400 2\n"
    "_sip._tcp 60 IN SRV 10 0 5080 @\n"
    "@ 60 IN A 127.0.0.5\n"
    "$ORIGIN plain.test.\n"
    "@ 60 IN SOA ns hostmaster 1 3600 600 86400 2\n"
    "@ 1 IN A 127.0.0.6\n"
    "$ORIGIN 0.0.127.in-addr.arpa.\n"
    "7 60 IN PTR good.example.test.\n"
    "8 60 IN PTR liar.example.test.\n"
    "$ORIGIN example.test.\n"
    "good 60 IN A 127.0.0.7\n"
    "liar 60 IN A 127.0.0.99\n";

START_TEST(dns_resolver_live)
{
    apr_pool_t *p;
    sip_loop_t *loop;
    dnslive_t d;
    dnswait_t w, w2;
    sip_uri_info_t u;
    apr_array_header_t *out;
    sip_dns_query_t *q, *q2;
    sip_sockaddr_t peer;
    const char *host;
    int verified, i;
    char servers[64];
    static const char *expect[] = { "TCP:127.0.0.2:5070", "TCP:::1:5070", "TCP:127.0.0.1:5071",
                                    "TCP:127.0.0.3:5071", "UDP:127.0.0.1:5072",
                                    "UDP:127.0.0.3:5072" };

    apr_pool_create(&p, NULL);
    memset(&w, 0, sizeof(w));
    memset(&w2, 0, sizeof(w2));
    dnslive_start(&d, dns_zone);
    ck_assert_int_eq(sip_loop_create(&loop, p), APR_SUCCESS);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    ck_assert_int_eq(sip_dns_init(loop, p, servers, apr_time_from_msec(500), 1, 100),
                     APR_SUCCESS);

    /* NAPTR (order 10 TCP, 20 UDP; WS ignored) -> SRV (priority) -> A/AAAA */
    memset(&u, 0, sizeof(u));
    u.host = "example.test";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    ck_assert_ptr_nonnull(q);
    /* the same name at once: joined to the query under way */
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q2, dnswait_cb, &w2),
                     SIP_DNS_PENDING);
    ck_assert_int_eq(w.calls, 0);       /* never from inside the call */
    dnswait_run(loop, &w, 5);
    if (!w2.calls)
        dnswait_run(loop, &w2, 5);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w2.calls, 1);
    ck_assert_int_eq(w.status, SIP_DNS_DONE);
    ck_assert_int_eq(w.targets->nelts, 6);
    for (i = 0; i < 6; i++) {
        const sip_dns_target_t *t = &APR_ARRAY_IDX(w.targets, i, sip_dns_target_t);
        ck_assert_str_eq(target_text(p, t), expect[i]);
        ck_assert_str_eq(t->host, "example.test");
    }
    ck_assert_int_eq(w2.targets->nelts, 6);
    ck_assert_int_eq(dnslive_count(&d, "example.test", "NAPTR"), 1);
    ck_assert_int_eq(dnslive_count(&d, "_sip._tcp.example.test", "SRV"), 1);
    ck_assert_int_eq(dnslive_count(&d, "b.example.test", "A"), 1);
    ck_assert_int_eq(dnslive_count(&d, "_sip._ws.example.test", "SRV"), 0);

    /* from the cache: DONE at once, no new query */
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_DONE);
    ck_assert_int_eq(out->nelts, 6);
    ck_assert_int_eq(dnslive_count(&d, "example.test", "NAPTR"), 1);

    /* no NAPTR: SRV per transport (TCP found), target "@" = the domain */
    u.host = "nonaptr.test";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_int_eq(w.status, SIP_DNS_DONE);
    ck_assert_int_eq(w.targets->nelts, 1);
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(w.targets, 0, sip_dns_target_t)),
                     "TCP:127.0.0.5:5080");

    /* neither NAPTR nor SRV: A on 5060 UDP; sips: 5061 TLS; TTL 1 s expires */
    u.host = "plain.test";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(w.targets, 0, sip_dns_target_t)),
                     "UDP:127.0.0.6:5060");
    ck_assert_int_eq(dnslive_count(&d, "plain.test", "A"), 1);
    u.secure = 1;               /* every record it needs is cached by now */
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_DONE);
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(out, 0, sip_dns_target_t)),
                     "TLS:127.0.0.6:5061");
    u.secure = 0;
    u.port = 5099;              /* explicit port: A/AAAA only (§4.2) */
    apr_sleep(apr_time_from_msec(1100));
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(w.targets, 0, sip_dns_target_t)),
                     "UDP:127.0.0.6:5099");
    ck_assert_int_eq(dnslive_count(&d, "plain.test", "A"), 2);   /* TTL expired: asked again */
    u.port = 0;

    /* RFC 3263 §5: a Via's sent-by: SRV of its transport, then A/AAAA */
    ck_assert_int_eq(sip_dns_resolve_via(p, "nonaptr.test", 0, SIP_TP_TCP, &out, &q, dnswait_cb,
                                         &w), SIP_DNS_DONE);       /* all cached */
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(out, 0, sip_dns_target_t)),
                     "TCP:127.0.0.5:5080");
    ck_assert_int_eq(sip_dns_resolve_via(p, "nonaptr.test", 5090, SIP_TP_UDP, &out, &q,
                                         dnswait_cb, &w), SIP_DNS_DONE);
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(out, 0, sip_dns_target_t)),
                     "UDP:127.0.0.5:5090");
    ck_assert_int_eq(sip_dns_resolve_via(p, "127.0.0.9", 0, SIP_TP_TLS, &out, &q, dnswait_cb,
                                         &w), SIP_DNS_DONE);
    ck_assert_str_eq(target_text(p, &APR_ARRAY_IDX(out, 0, sip_dns_target_t)),
                     "TLS:127.0.0.9:5061");
    ck_assert_int_eq(sip_dns_resolve_via(p, "nonaptr.test", 0, SIP_TP_WS, &out, &q, dnswait_cb,
                                         &w), SIP_DNS_NOTRANSPORT);

    /* SipDNSCacheSize bounds the cache (here 100 entries) */
    ck_assert_uint_le(dns_res->count, 100);

    /* unknown name: NOTFOUND through the callback; then negatively cached */
    u.host = "nope.example.test";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_int_eq(w.status, SIP_DNS_NOTFOUND);
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_NOTFOUND);

    /* reverse: single, double that verifies, double that does not */
    sip_sockaddr_set(&peer, "127.0.0.7", 1);
    ck_assert_int_eq(sip_dns_reverse(p, &peer, 1, &host, &verified, &q, dnswait_name_cb, &w),
                     SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_str_eq(w.name, "good.example.test");
    ck_assert_int_eq(w.verified, 1);
    ck_assert_int_eq(sip_dns_reverse(p, &peer, 1, &host, &verified, &q, dnswait_name_cb, &w),
                     SIP_DNS_DONE);
    ck_assert_str_eq(host, "good.example.test");
    sip_sockaddr_set(&peer, "127.0.0.8", 1);
    ck_assert_int_eq(sip_dns_reverse(p, &peer, 0, &host, &verified, &q, dnswait_name_cb, &w),
                     SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_str_eq(w.name, "liar.example.test");
    ck_assert_int_eq(w.verified, 0);
    w.calls = 0;
    ck_assert_int_eq(sip_dns_reverse(p, &peer, 1, &host, &verified, &q, dnswait_name_cb, &w),
                     SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_ptr_null(w.name);

    /* a silent server: TIMEOUT after SipDNSTimeout, the loop not blocked;
     * a cancelled query never calls back */
    dnslive_file(&d, "control", "silent\n");
    u.host = "silent.test";
    w.calls = 0;
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    u.host = "silent2.test";
    w2.calls = 0;
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q2, dnswait_cb, &w2),
                     SIP_DNS_PENDING);
    sip_dns_cancel(q2);
    {
        apr_time_t t0 = apr_time_now();
        dnswait_run(loop, &w, 5);
        ck_assert_int_eq(w.status, SIP_DNS_TIMEOUT);
        ck_assert_msg(apr_time_now() - t0 < apr_time_from_msec(1500), "timeout took too long");
    }
    dnswait_run(loop, &w2, 1);
    ck_assert_int_eq(w2.calls, 0);
    ck_assert_uint_gt(sip_stats->dns_timeouts, 0);
    ck_assert_uint_gt(sip_stats->dns_cache_hits, 0);

    /* shutdown with a query under way: no callback, nothing left */
    u.host = "silent3.test";
    w.calls = 0;
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    sip_dns_shutdown();
    ck_assert_int_eq(w.calls, 0);
    dnslive_stop(&d);
    apr_pool_destroy(p);
}
END_TEST

/* SipDNSCacheSize 2: the least recently used answers go first */
START_TEST(dns_cache_bound)
{
    apr_pool_t *p;
    sip_loop_t *loop;
    dnslive_t d;
    dnswait_t w;
    sip_uri_info_t u;
    apr_array_header_t *out;
    sip_dns_query_t *q;
    char servers[64];

    apr_pool_create(&p, NULL);
    memset(&w, 0, sizeof(w));
    dnslive_start(&d, dns_zone);
    ck_assert_int_eq(sip_loop_create(&loop, p), APR_SUCCESS);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    ck_assert_int_eq(sip_dns_init(loop, p, servers, apr_time_from_msec(500), 1, 2), APR_SUCCESS);
    memset(&u, 0, sizeof(u));
    u.port = 5060;              /* A and AAAA only: two entries per name */
    u.host = "a.example.test";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_int_eq(w.status, SIP_DNS_DONE);
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_DONE);
    u.host = "b.example.test";
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_int_eq(w.targets->nelts, 2);
    ck_assert_uint_le(dns_res->count, 2);
    u.host = "a.example.test";  /* evicted: asked again */
    ck_assert_int_eq(sip_dns_resolve_uri(p, &u, -1, &out, &q, dnswait_cb, &w), SIP_DNS_PENDING);
    dnswait_run(loop, &w, 5);
    ck_assert_int_eq(dnslive_count(&d, "a.example.test", "A"), 2);
    ck_assert_int_eq(dnslive_count(&d, "b.example.test", "A"), 1);
    sip_dns_shutdown();
    dnslive_stop(&d);
    apr_pool_destroy(p);
}
END_TEST

static Suite *dns_suite(void)
{
    Suite *s = suite_create("dns");
    TCase *tc = tcase_create("pure");
    TCase *live = tcase_create("live");

    tcase_add_test(tc, dns_parse_answers);
    tcase_add_test(tc, dns_naptr_filter_order);
    tcase_add_test(tc, dns_srv_weights);
    tcase_add_test(tc, dns_defaults_and_names);
    suite_add_tcase(s, tc);
    tcase_set_timeout(live, 30);
    tcase_add_test(live, dns_resolver_live);
    tcase_add_test(live, dns_cache_bound);
    suite_add_tcase(s, live);
    return s;
}

/* ================================================================== */
/* lean: the SipDirectory lookup cache and the access log's need       */

START_TEST(lookup_fresh_rules)
{
    sip_cgi_dirstamp_t then = { 1, 2, 0, 0 }, dir;
    apr_time_t checked = apr_time_from_sec(1000);
    apr_int64_t old_ns = (apr_int64_t)(checked - apr_time_from_sec(5)) * 1000;

    then.mtime_ns = then.ctime_ns = old_ns;
    dir = then;
    ck_assert(sip_cgi_lookup_fresh(&then, checked, &dir, checked));
    ck_assert(sip_cgi_lookup_fresh(&then, checked, &dir, checked + SIP_CGI_LOOKUP_TTL - 1));
    /* at most the TTL, and never from the future (a clock set back) */
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked + SIP_CGI_LOOKUP_TTL));
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked - 1));
    /* an entry added, removed or renamed: mtime; a chmod of the directory: ctime */
    dir.mtime_ns++;
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked));
    dir = then;
    dir.ctime_ns++;
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked));
    /* another directory mounted or moved in its place */
    dir = then;
    dir.ino = 3;
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked));
    dir = then;
    dir.dev = 9;
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked));
    /* a directory changed within the racy window of the check: its next
     * change could carry the same coarse time, so nothing is kept */
    then.mtime_ns = (apr_int64_t)(checked - SIP_CGI_LOOKUP_RACY / 2) * 1000;
    dir = then;
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked + 1));
    then.mtime_ns = old_ns;
    then.ctime_ns = (apr_int64_t)(checked - SIP_CGI_LOOKUP_RACY / 2) * 1000;
    dir = then;
    ck_assert(!sip_cgi_lookup_fresh(&then, checked, &dir, checked + 1));
}
END_TEST

static char cache_dir[PATH_MAX], cache_out[PATH_MAX + 8];

static void cache_setup(void)
{
    const char *base = getenv("TMPDIR");

    snprintf(cache_dir, sizeof(cache_dir), "%s/sip_cache_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(cache_dir));
    snprintf(cache_out, sizeof(cache_out), "%s-out", cache_dir);
    ck_assert_int_eq(mkdir(cache_out, 0755), 0);
    write_file(cache_out, "evil", 0755);
    write_file(cache_dir, "a@h", 0755);
    write_file(cache_dir, "target", 0755);
    symlink_in(cache_dir, "link@h", "target");
}

static void cache_teardown(void)
{
    char cmd[PATH_MAX * 3];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", cache_dir, cache_out);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cache_dir);
}

/* past the racy window of the last change, and the shared directory stat */
static void settle(void)
{
    usleep((useconds_t)(SIP_CGI_LOOKUP_RACY + 10000));
}

static int cached_locate(const char *name, const char **path, const char **why)
{
    *path = NULL;
    *why = NULL;
    usleep(1000);      /* a later burst: the directory is looked at again */
    return sip_cgi_locate_file(pool, cache_dir, name, 1, path, why);
}

START_TEST(lookup_cache_dir_changes)
{
    char p1[PATH_MAX * 2], p2[PATH_MAX * 2];
    const char *path, *why;

    settle();
    ck_assert_int_eq(cached_locate("a@h", &path, &why), 0);
    ck_assert_int_eq(cached_locate("new@h", &path, &why), 404);
    /* what the directory cannot tell is kept: a mode changed in place */
    snprintf(p1, sizeof(p1), "%s/a@h", cache_dir);
    ck_assert_int_eq(chmod(p1, 0644), 0);
    ck_assert_int_eq(cached_locate("a@h", &path, &why), 0);
    /* ... for at most the TTL */
    usleep((useconds_t)SIP_CGI_LOOKUP_TTL);
    ck_assert_int_eq(cached_locate("a@h", &path, &why), 403);
    ck_assert_str_eq(why, "a@h is not executable");
    /* the negative answer goes as soon as the script is added */
    write_file(cache_dir, "new@h", 0755);
    ck_assert_int_eq(cached_locate("new@h", &path, &why), 0);
    settle();
    ck_assert_int_eq(cached_locate("new@h", &path, &why), 0);
    /* removed */
    snprintf(p1, sizeof(p1), "%s/new@h", cache_dir);
    ck_assert_int_eq(unlink(p1), 0);
    ck_assert_int_eq(cached_locate("new@h", &path, &why), 404);
    /* a symlink swapped (renamed over) to lead outside, once cached */
    settle();
    ck_assert_int_eq(cached_locate("link@h", &path, &why), 0);
    ck_assert_int_eq(cached_locate("link@h", &path, &why), 0);
    snprintf(p1, sizeof(p1), "%s/evil", cache_out);
    symlink_in(cache_dir, "tmp-link", p1);
    snprintf(p1, sizeof(p1), "%s/tmp-link", cache_dir);
    snprintf(p2, sizeof(p2), "%s/link@h", cache_dir);
    ck_assert_int_eq(rename(p1, p2), 0);
    ck_assert_int_eq(cached_locate("link@h", &path, &why), 403);
    ck_assert_ptr_nonnull(strstr(why, "outside SipDirectory"));
    settle();
    ck_assert_int_eq(cached_locate("link@h", &path, &why), 403);
}
END_TEST

static apr_array_header_t *log_hooks(const char *const *names)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(ap_LINK_log_transaction_t));

    for (; *names; names++) {
        ap_LINK_log_transaction_t *h = apr_array_push(a);
        memset(h, 0, sizeof(*h));
        h->szName = *names;
    }
    return a;
}

static ap_directive_t *directive(const char *name, ap_directive_t *child, ap_directive_t *next)
{
    ap_directive_t *d = apr_pcalloc(pool, sizeof(*d));

    d->directive = name;
    d->first_child = child;
    d->next = next;
    return d;
}

START_TEST(log_wanted_rules)
{
    static const char *const none[] = { NULL };
    static const char *const std[] = { "mod_logio.c", "mod_log_config.c", NULL };
    static const char *const logio[] = { "mod_logio.c", NULL };
    static const char *const other[] = { "mod_log_config.c", "mod_security2.c", NULL };
    ap_directive_t *bare = directive("ServerName", NULL, directive("Listen", NULL, NULL));
    ap_directive_t *in_vhost = directive("Listen", NULL,
                                         directive("<VirtualHost", directive("ProtocolSip", NULL,
                                                   directive("customlog", NULL, NULL)), NULL));
    ap_directive_t *transfer = directive("TransferLog", NULL, NULL);

    ck_assert_int_eq(sip_log_access_wanted(NULL, bare), 0);
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(none), in_vhost), 0);
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(logio), in_vhost), 0);
    /* mod_log_config with nothing to write */
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(std), bare), 0);
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(std), NULL), 0);
    /* a log anywhere, in a section too, any case */
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(std), in_vhost), 1);
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(std), transfer), 1);
    /* a module we don't know may use anything */
    ck_assert_int_eq(sip_log_access_wanted(log_hooks(other), bare), 1);
}
END_TEST

static Suite *lean_suite(void)
{
    Suite *s = suite_create("lean");
    TCase *tc = tcase_create("pure");
    TCase *fs = tcase_create("fs");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, lookup_fresh_rules);
    tcase_add_test(tc, log_wanted_rules);
    suite_add_tcase(s, tc);
    tcase_add_unchecked_fixture(fs, cache_setup, cache_teardown);
    tcase_add_checked_fixture(fs, pool_setup, pool_teardown);
    tcase_set_timeout(fs, 20);
    tcase_add_test(fs, lookup_cache_dir_changes);
    suite_add_tcase(s, fs);
    return s;
}

/* ---- replica (issue 19): location replicas across engines, flows of
 * other engines ---- */

static int journal_size(int fd)
{
    return (int)lseek(fd, 0, SEEK_END);
}

START_TEST(replica_text_roundtrip)
{
    sip_binding_t b = mkb("sip:r@h", "sip:r@10.0.0.9:5070;transport=tcp", "cid", 4, 600, 700);
    apr_array_header_t *cur;
    const sip_binding_t *got;
    const char *text;
    char tmpl[] = "/tmp/replica-journal-XXXXXX";
    int fd = mkstemp(tmpl);

    ck_assert_int_ge(fd, 0);
    unlink(tmpl);
    sip_engine_identity_set(0, 2);
    b.transport = SIP_TP_TCP;
    b.flow = ((apr_uint64_t)1 << SIP_FLOW_ENGINE_SHIFT) | ((apr_uint64_t)SIP_TP_TCP << 52) | 0x12345;
    b.received = "192.0.2.7:40000";
    b.instance = "urn:uuid:1";
    b.reg_id = 2;
    b.path = "<sip:edge;lr>";
    set_binding(&b, 0);
    text = sip_location_replica_text(pool, "sip:r@h");
    ck_assert_ptr_nonnull(strstr(text, "A\tsip:r@h\n"));
    ck_assert_ptr_nonnull(strstr(text, "\t0110000000012345\n"));
    /* another engine's table: empty, then the record applied */
    remove_all("sip:r@h", 0);
    ck_assert_int_eq(sip_location_lookup(pool, "sip:r@h")->nelts, 0);
    journal = fd;
    sip_location_replica_apply(text, strlen(text));
    ck_assert_int_eq(journal_size(fd), 0);     /* replicas are never journaled */
    cur = sip_location_lookup(pool, "sip:r@h");
    ck_assert_int_eq(cur->nelts, 1);
    got = APR_ARRAY_IDX(cur, 0, sip_binding_t *);
    ck_assert(got->flow == b.flow);
    ck_assert_int_eq(got->transport, SIP_TP_TCP);
    ck_assert_str_eq(got->received, "192.0.2.7:40000");
    ck_assert_str_eq(got->instance, "urn:uuid:1");
    ck_assert_int_eq(got->reg_id, 2);
    ck_assert_str_eq(got->path, "<sip:edge;lr>");
    ck_assert_int_eq(got->q1000, 700);
    ck_assert_uint_eq(got->cseq, 4);
    /* the home's own change is journaled, without the flow */
    b.cseq = 5;
    sip_location_set(&b);
    ck_assert_int_gt(journal_size(fd), 0);
    {
        char buf[1024];
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        ck_assert_int_gt(n, 0);
        buf[n] = '\0';
        ck_assert_ptr_null(strstr(buf, "0110000000012345"));
    }
    journal = -1;
    close(fd);
}
END_TEST

START_TEST(replica_state_replaces)
{
    sip_binding_t a = mkb("sip:s@h", "sip:s@10.0.0.1", "c", 1, 600, 1000);
    sip_binding_t b = mkb("sip:s@h", "sip:s@10.0.0.2", "c", 1, 600, 500);
    const char *both, *one, *none;

    set_binding(&a, 0);
    set_binding(&b, 0);
    both = sip_location_replica_text(pool, "sip:s@h");
    sip_location_remove("sip:s@h", "sip:s@10.0.0.2");
    one = sip_location_replica_text(pool, "sip:s@h");
    remove_all("sip:s@h", 0);
    none = sip_location_replica_text(pool, "sip:s@h");
    /* each record is a whole state: the last one applied wins, twice is once */
    sip_location_replica_apply(both, strlen(both));
    sip_location_replica_apply(both, strlen(both));
    ck_assert_int_eq(sip_location_lookup(pool, "sip:s@h")->nelts, 2);
    ck_assert_uint_eq(sip_location_count(), 2);
    sip_location_replica_apply(one, strlen(one));
    ck_assert_int_eq(sip_location_lookup(pool, "sip:s@h")->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(sip_location_lookup(pool, "sip:s@h"), 0, sip_binding_t *)->contact,
                     "sip:s@10.0.0.1");
    /* no binding left: still known (480, not 404) */
    sip_location_replica_apply(none, strlen(none));
    ck_assert_ptr_nonnull(sip_location_lookup(pool, "sip:s@h"));
    ck_assert_int_eq(sip_location_lookup(pool, "sip:s@h")->nelts, 0);
    ck_assert_ptr_null(sip_location_lookup(pool, "sip:never@h"));
    /* an expired binding in a record removes it; garbage lines are skipped */
    sip_location_replica_apply(both, strlen(both));
    {
        const char *bad = "B\tsip:s@h\tsip:s@10.0.0.1\t\tc\t2\t1\t1000\t\t\t\t\t\t0\t0\nZ junk\n";
        sip_location_replica_apply(bad, strlen(bad));
    }
    ck_assert_int_eq(sip_location_lookup(pool, "sip:s@h")->nelts, 1);
}
END_TEST

START_TEST(replica_journal_never_restores_flow)
{
    char line[] = "B\tsip:j@h\tsip:j@10.0.0.1;transport=tcp\t\tc\t1\t99999999999999999\t1000\t\t\ttcp"
                  "\t10.0.0.1:5\t\t0\t0110000000000001";
    int version = JOURNAL_VERSION;

    replay_line(line, &version, 0);
    ck_assert_int_eq(sip_location_lookup(pool, "sip:j@h")->nelts, 1);
    ck_assert(APR_ARRAY_IDX(sip_location_lookup(pool, "sip:j@h"), 0, sip_binding_t *)->flow == 0);
}
END_TEST

START_TEST(replica_homed_aors)
{
    apr_array_header_t *mine;
    char aor[32];
    int i, n0 = 0, n1 = 0;

    sip_engine_identity_set(1, 2);
    for (i = 0; i < 40; i++) {
        sip_binding_t b;
        apr_snprintf(aor, sizeof(aor), "sip:u%d@h", i);
        b = mkb(apr_pstrdup(pool, aor), "sip:x@10.0.0.1", "c", 1, 600, 1000);
        set_binding(&b, 0);
        if (sip_engine_home(aor) == 1)
            n1++;
        else
            n0++;
    }
    ck_assert_int_gt(n0, 0);        /* the hash spreads AoRs over both */
    ck_assert_int_gt(n1, 0);
    mine = sip_location_homed_aors(pool);
    ck_assert_int_eq(mine->nelts, n1);
    for (i = 0; i < mine->nelts; i++)
        ck_assert_int_eq(sip_engine_home(APR_ARRAY_IDX(mine, i, const char *)), 1);
}
END_TEST

static apr_uint64_t remote_id(int engine, int kind, apr_uint32_t gen, apr_uint32_t n)
{
    return ((apr_uint64_t)engine << SIP_FLOW_ENGINE_SHIFT) | ((apr_uint64_t)kind << FLOW_KIND_SHIFT)
           | ((apr_uint64_t)gen << FLOW_GEN_SHIFT) | n;
}

START_TEST(replica_remote_flows)
{
    sip_source_t src;
    sip_sockaddr_t peer, local;
    apr_uint64_t ws = remote_id(1, SIP_TP_WS, 7, 1), tcp = remote_id(1, SIP_TP_TCP, 7, 2);

    sip_transport_init(NULL, pool, NULL, NULL);
    sip_engine_identity_set(0, 2);
    /* another engine's flow: a stand-in of the id's transport */
    ck_assert_int_eq(sip_transport_flow_source(ws, &src), 1);
    ck_assert_int_eq(src.kind, SIP_TP_WS);
    ck_assert(sip_source_flow_id(&src) == ws);
    ck_assert_int_eq(sip_source_is_open(&src), 1);
    /* closed by its owner: every holder sees it at once */
    sip_transport_remote_closed(ws);
    ck_assert_int_eq(sip_source_is_open(&src), 0);
    ck_assert_int_eq(sip_transport_send(&src, NULL, "x", 1), APR_ECONNABORTED);
    sip_source_release(&src);
    ck_assert_int_eq(sip_transport_flow_source(ws, &src), 0);
    /* a flow closed before anyone here asked for it */
    sip_transport_remote_closed(remote_id(1, SIP_TP_TCP, 7, 3));
    ck_assert_int_eq(sip_transport_flow_source(remote_id(1, SIP_TP_TCP, 7, 3), &src), 0);
    /* a handed-over message's source keeps what the owner saw */
    sip_sockaddr_set(&peer, "192.0.2.1", 4000);
    sip_sockaddr_set(&local, "127.0.0.1", 5060);
    ck_assert_int_eq(sip_transport_remote_source(tcp, SIP_TP_TCP, &peer, &local, pool, &src), 1);
    ck_assert_int_eq(sip_sockaddr_port(&src.peer), 4000);
    ck_assert_ptr_eq(src.vhost, pool);
    sip_source_release(&src);
    ck_assert_int_eq(sip_transport_remote_source(tcp, SIP_TP_TLS, &peer, &local, pool, &src), 0);
    /* the owner restarted (a new generation): its old flows are gone */
    ck_assert_int_eq(sip_transport_flow_source(tcp, &src), 1);
    sip_transport_peer_generation(1, 8);
    ck_assert_int_eq(sip_source_is_open(&src), 0);
    sip_source_release(&src);
    ck_assert_int_eq(sip_transport_flow_source(remote_id(1, SIP_TP_TCP, 7, 9), &src), 0);
    ck_assert_int_eq(sip_transport_flow_source(remote_id(1, SIP_TP_TCP, 8, 9), &src), 1);
    sip_source_release(&src);
    /* not an engine that runs, not a stream: nothing */
    ck_assert_int_eq(sip_transport_flow_source(remote_id(5, SIP_TP_TCP, 7, 1), &src), 0);
    ck_assert_int_eq(sip_transport_flow_source(remote_id(1, SIP_TP_UDP, 7, 1), &src), 0);
    /* our own engine's ids are looked up locally only */
    ck_assert_int_eq(sip_transport_flow_source(remote_id(0, SIP_TP_TCP, 7, 1), &src), 0);
    ck_assert_int_eq(sip_transport_flow_send(remote_id(0, SIP_TP_TCP, 7, 1), "x", 1),
                     APR_ECONNABORTED);
    ck_assert_uint_ne(sip_transport_flow_generation(), 0);
}
END_TEST

static Suite *replica_suite(void)
{
    Suite *su = suite_create("replica");
    TCase *tc = tcase_create("replica");

    tcase_add_checked_fixture(tc, store_setup, pool_teardown);
    tcase_add_test(tc, replica_text_roundtrip);
    tcase_add_test(tc, replica_state_replaces);
    tcase_add_test(tc, replica_journal_never_restores_flow);
    tcase_add_test(tc, replica_homed_aors);
    tcase_add_test(tc, replica_remote_flows);
    suite_add_tcase(su, tc);
    return su;
}

/* ---- the mod_dbd location store (sip_location_dbd.c): notes, directives,
 * the cache ---- */

START_TEST(dbd_note_payloads)
{
    ck_assert_ptr_null(note_foreign_aor("123-ab sip:a@h", "123-ab"));     /* our own */
    ck_assert_str_eq(note_foreign_aor("9-ff sip:a@h", "123-ab"), "sip:a@h");
    ck_assert_str_eq(note_foreign_aor("123-abc sip:a@h", "123-ab"), "sip:a@h");  /* a prefix */
    ck_assert_str_eq(note_foreign_aor("123-a sip:a@h", "123-ab"), "sip:a@h");
    ck_assert_ptr_null(note_foreign_aor("nospace", "123-ab"));
    ck_assert_ptr_null(note_foreign_aor("x ", "123-ab"));
    ck_assert_ptr_null(note_foreign_aor(NULL, "123-ab"));
    /* a batch's note: one AoR a line */
    ck_assert_str_eq(note_foreign_aor("9-ff sip:a@h\nsip:b@h", "123-ab"), "sip:a@h\nsip:b@h");
}
END_TEST

START_TEST(dbd_directives)
{
    int batch = 0, ttl = -1;
    const char *notify = NULL;

    ck_assert_ptr_null(sip_location_dbd_directive("SipLocationBatch", "64", &batch, &notify, &ttl));
    ck_assert_int_eq(batch, 64);
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationBatch", "0", &batch, &notify, &ttl));
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationBatch", "4097", &batch, &notify,
                                                     &ttl));
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationBatch", "8x", &batch, &notify, &ttl));
    ck_assert_int_eq(batch, 64);
    ck_assert_ptr_null(sip_location_dbd_directive("SipLocationNotify", "site_2", &batch, &notify,
                                                  &ttl));
    ck_assert_str_eq(notify, "site_2");
    ck_assert_ptr_null(sip_location_dbd_directive("SipLocationNotify", "Off", &batch, &notify, &ttl));
    ck_assert_str_eq(notify, "");
    /* it goes into NOTIFY unquoted: nothing but a plain identifier */
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationNotify", "a;DROP", &batch, &notify,
                                                     &ttl));
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationNotify", "Site", &batch, &notify,
                                                     &ttl));
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationNotify", "1site", &batch, &notify,
                                                     &ttl));
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationNotify",
                                                     "a123456789012345678901234567890123456789"
                                                     "012345678901234567890123", &batch, &notify,
                                                     &ttl));
    ck_assert_ptr_null(sip_location_dbd_directive("SipLocationCacheTTL", "2", &batch, &notify, &ttl));
    ck_assert_int_eq(ttl, 2000);
    ck_assert_ptr_null(sip_location_dbd_directive("SipLocationCacheTTL", "250ms", &batch, &notify,
                                                  &ttl));
    ck_assert_int_eq(ttl, 250);
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationCacheTTL", "-1", &batch, &notify,
                                                     &ttl));
    ck_assert_ptr_nonnull(sip_location_dbd_directive("SipLocationCacheTTL", "5s", &batch, &notify,
                                                     &ttl));
    ck_assert_int_eq(ttl, 250);
}
END_TEST

static apr_array_header_t *dbd_two_bindings(apr_time_t now)
{
    apr_array_header_t *a = apr_array_make(pool, 2, sizeof(sip_binding_t *));
    sip_binding_t *live = apr_pcalloc(pool, sizeof(*live)), *dead = apr_pcalloc(pool, sizeof(*dead));

    live->aor = dead->aor = "sip:c@h";
    live->call_id = dead->call_id = "cid";
    live->contact = "sip:c@10.0.0.1";
    live->expires = now + apr_time_from_sec(60);
    dead->contact = "sip:c@10.0.0.2";
    dead->expires = now + apr_time_from_msec(100);
    *(sip_binding_t **)apr_array_push(a) = live;
    *(sip_binding_t **)apr_array_push(a) = dead;
    return a;
}

START_TEST(dbd_cache_rules)
{
    apr_time_t now = apr_time_now();
    apr_array_header_t *scripts = apr_array_make(pool, 1, sizeof(sip_script_t *)), *got;
    sip_script_t *sc = apr_pcalloc(pool, sizeof(*sc));
    cache_ent_t *e;
    loc_job_t j;

    dbd_cache = apr_hash_make(pool);
    ck_assert_int_eq(apr_thread_mutex_create(&dbd_lock, APR_THREAD_MUTEX_DEFAULT, pool), APR_SUCCESS);
    cache_listening = 1;
    dbd_ttl = 0;
    cache_put("sip:c@h", 1, dbd_two_bindings(now), 0, NULL);
    e = cache_get("sip:c@h", now);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(cache_bindings(pool, e, now)->nelts, 2);
    /* a binding expired since it was cached is not handed out */
    got = cache_bindings(pool, e, now + apr_time_from_sec(1));
    ck_assert_int_eq(got->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(got, 0, sip_binding_t *)->contact, "sip:c@10.0.0.1");
    /* scripts join the bindings; a later binding change keeps them, a
     * change of the scripts without their list forgets them */
    sc->aor = "sip:c@h";
    sc->type = "cpl";
    sc->content_type = "application/cpl+xml";
    sc->body = "<cpl/>";
    sc->len = 6;
    *(sip_script_t **)apr_array_push(scripts) = sc;
    cache_put("sip:c@h", 0, NULL, 1, scripts);
    cache_put("sip:c@h", 1, dbd_two_bindings(now), 0, NULL);
    e = cache_get("sip:c@h", now);
    ck_assert_ptr_nonnull(e->scripts);
    ck_assert_int_eq(e->scripts->nelts, 1);
    ck_assert_int_eq(e->have_bindings, 1);
    cache_put("sip:c@h", 1, dbd_two_bindings(now), 1, NULL);
    ck_assert_ptr_null(cache_get("sip:c@h", now)->scripts);
    /* an AoR never registered is cached as such */
    cache_put("sip:never@h", 1, NULL, 0, NULL);
    e = cache_get("sip:never@h", now);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->have_bindings, 1);
    ck_assert_ptr_null(cache_bindings(pool, e, now));
    /* a read older than the last note may not fill it */
    memset(&j, 0, sizeof(j));
    j.stamp = dbd_changes;
    ck_assert(cache_may_fill(&j, dbd_changes));
    ck_assert(!cache_may_fill(&j, dbd_changes + 1));
    j.dberr = 500;
    ck_assert(!cache_may_fill(&j, dbd_changes));
    /* a drop: gone, and reads under way are as stale */
    j.dberr = 0;
    sip_location_dbd_invalidate("sip:c@h");
    ck_assert_ptr_null(cache_get("sip:c@h", now));
    ck_assert(!cache_may_fill(&j, dbd_changes));
    /* without notes: nothing without a TTL, then only for the TTL */
    cache_listening = 0;
    ck_assert(!cache_on());
    ck_assert_ptr_null(cache_get("sip:never@h", now));
    dbd_ttl = apr_time_from_sec(1);
    ck_assert(cache_on());
    cache_put("sip:c@h", 1, dbd_two_bindings(now), 0, NULL);
    ck_assert_ptr_nonnull(cache_get("sip:c@h", apr_time_now()));
    ck_assert_ptr_null(cache_get("sip:c@h", apr_time_now() + apr_time_from_sec(2)));
    /* bounded: beyond the most AoRs it starts afresh */
    dbd_cache_max = 3;
    cache_put("sip:1@h", 1, NULL, 0, NULL);
    cache_put("sip:2@h", 1, NULL, 0, NULL);
    cache_put("sip:3@h", 1, NULL, 0, NULL);
    ck_assert_uint_eq(apr_hash_count(dbd_cache), 3);
    cache_put("sip:4@h", 1, NULL, 0, NULL);
    ck_assert_uint_eq(apr_hash_count(dbd_cache), 1);
    cache_clear();
    ck_assert_uint_eq(apr_hash_count(dbd_cache), 0);
    dbd_cache_max = SIP_LOC_CACHE_MAX;
    dbd_ttl = 0;
    dbd_cache = NULL;
    apr_thread_mutex_destroy(dbd_lock);
    dbd_lock = NULL;
}
END_TEST

/* Which changes may go into the batch's one multi-row INSERT: plain
 * upserts of distinct contacts only (order matters for the rest). */
START_TEST(dbd_rows_only)
{
    sip_reg_change_t c;
    sip_binding_t b;
    apr_time_t now = apr_time_now();

    memset(&c, 0, sizeof(c));
    memset(&b, 0, sizeof(b));
    c.aor = b.aor = "sip:r@h";
    c.call_id = b.call_id = "cid";
    c.bindings = apr_array_make(pool, 2, sizeof(sip_binding_t));
    ck_assert(!rows_only(pool, &c));                        /* a fetch writes nothing */
    b.contact = "sip:r@10.0.0.1";
    b.expires = now + apr_time_from_sec(60);
    APR_ARRAY_PUSH(c.bindings, sip_binding_t) = b;
    ck_assert(rows_only(pool, &c));
    b.contact = "sip:r@10.0.0.2";
    APR_ARRAY_PUSH(c.bindings, sip_binding_t) = b;
    ck_assert(rows_only(pool, &c));
    b.contact = "SIP:r@10.0.0.1";                          /* the first one again */
    APR_ARRAY_PUSH(c.bindings, sip_binding_t) = b;
    ck_assert(!rows_only(pool, &c));
    c.bindings->nelts = 2;
    APR_ARRAY_IDX(c.bindings, 1, sip_binding_t).expires = 0;    /* a removal */
    ck_assert(!rows_only(pool, &c));
    APR_ARRAY_IDX(c.bindings, 1, sip_binding_t).expires = b.expires;
    APR_ARRAY_IDX(c.bindings, 1, sip_binding_t).instance = "urn:uuid:1";
    ck_assert(!rows_only(pool, &c));
    APR_ARRAY_IDX(c.bindings, 1, sip_binding_t).instance = NULL;
    c.star = 1;
    ck_assert(!rows_only(pool, &c));
}
END_TEST

/* A batch's rows go to PostgreSQL as one array per column: every element
 * quoted, '"' and '\\' escaped, so that commas, braces, quotes and
 * backslashes in a URI or a display name arrive as they were. */
START_TEST(dbd_pg_array_text)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const char *));
    batch_rows_t rows;
    const char *row[ROW_NCOLS] = { "sip:a@x", NULL, "", "c", "1", "2", "1000", NULL, "\"Al\"",
                                   "", "", "", "0" };

    ck_assert_str_eq(pg_array_text(pool, a), "{}");
    APR_ARRAY_PUSH(a, const char *) = "sip:a@x;p={1,2}";
    APR_ARRAY_PUSH(a, const char *) = "";
    APR_ARRAY_PUSH(a, const char *) = "say \"hi\" \\o/";
    APR_ARRAY_PUSH(a, const char *) = "NULL";
    ck_assert_str_eq(pg_array_text(pool, a),
                     "{\"sip:a@x;p={1,2}\",\"\",\"say \\\"hi\\\" \\\\o/\",\"NULL\"}");
    batch_rows_init(pool, &rows, 2);
    batch_row(&rows, row);
    batch_row(&rows, row);
    ck_assert_int_eq(rows.col[ROW_NCOLS - 1]->nelts, 2);
    ck_assert_str_eq(pg_array_text(pool, rows.col[1]), "{\"\",\"\"}");     /* NULL: empty */
    ck_assert_str_eq(pg_array_text(pool, rows.col[8]), "{\"\\\"Al\\\"\",\"\\\"Al\\\"\"}");
}
END_TEST

/* The answer of a batch committed in two round trips is worked out, not
 * read back: it must be what db_select_where() would have read. */
START_TEST(dbd_rows_after)
{
    apr_time_t now = apr_time_now(), later = now + apr_time_from_sec(600);
    apr_array_header_t *cur = apr_array_make(pool, 2, sizeof(sip_binding_t *)), *out;
    sip_binding_t olda = {0}, oldb = {0}, b = {0};
    sip_reg_change_t c = {0};
    const sip_binding_t *r;

    olda.aor = oldb.aor = "sip:r@h";
    olda.contact = "sip:a@10.0.0.1";
    olda.params = oldb.params = "";
    olda.call_id = oldb.call_id = "old-call";
    olda.cseq = oldb.cseq = 4;
    olda.expires = oldb.expires = later;
    olda.q1000 = 500;
    oldb.contact = "sip:b@10.0.0.2";
    oldb.q1000 = 1000;
    oldb.transport = SIP_TP_UDP;
    APR_ARRAY_PUSH(cur, sip_binding_t *) = &olda;
    APR_ARRAY_PUSH(cur, sip_binding_t *) = &oldb;
    c.aor = "sip:r@h";
    c.call_id = "new-call";
    c.bindings = apr_array_make(pool, 2, sizeof(sip_binding_t));
    b.aor = c.aor;
    b.call_id = c.call_id;
    b.cseq = 7;
    b.expires = later + 1;
    b.contact = "SIP:a@10.0.0.1";           /* the same URI as olda, spelt otherwise */
    b.params = ";x=1";
    b.q1000 = 900;
    b.path = "";
    APR_ARRAY_PUSH(c.bindings, sip_binding_t) = b;
    b.contact = "sip:c@10.0.0.3";
    b.params = NULL;
    b.q1000 = 700;
    b.transport = SIP_TP_TCP;
    b.display = "\"C\"";
    b.received = "192.0.2.1:5060";
    b.path = "<sip:p@10.0.0.9;lr>";
    APR_ARRAY_PUSH(c.bindings, sip_binding_t) = b;
    ck_assert(rows_only(pool, &c));

    out = rows_after(pool, &c, cur);
    ck_assert_int_eq(out->nelts, 3);
    r = APR_ARRAY_IDX(out, 0, sip_binding_t *);     /* best q first */
    ck_assert_str_eq(r->contact, "sip:b@10.0.0.2");
    ck_assert_str_eq(r->call_id, "old-call");       /* untouched */
    ck_assert_int_eq(r->cseq, 4);
    r = APR_ARRAY_IDX(out, 1, sip_binding_t *);
    ck_assert_str_eq(r->contact, "sip:a@10.0.0.1"); /* the stored spelling is the row's key */
    ck_assert_str_eq(r->call_id, "new-call");
    ck_assert_int_eq(r->cseq, 7);
    ck_assert_int_eq(r->q1000, 900);
    ck_assert_str_eq(r->params, ";x=1");
    ck_assert(r->expires == later + 1);
    ck_assert_ptr_null(r->path);                    /* '' reads back as none */
    ck_assert_int_eq(r->transport, SIP_TP_UDP);
    r = APR_ARRAY_IDX(out, 2, sip_binding_t *);
    ck_assert_str_eq(r->contact, "sip:c@10.0.0.3");
    ck_assert_str_eq(r->aor, "sip:r@h");
    ck_assert_str_eq(r->params, "");
    ck_assert_int_eq(r->transport, SIP_TP_TCP);
    ck_assert_str_eq(r->display, "\"C\"");
    ck_assert_str_eq(r->received, "192.0.2.1:5060");
    ck_assert_str_eq(r->path, "<sip:p@10.0.0.9;lr>");
    ck_assert_ptr_null(r->instance);
    ck_assert_int_eq(r->reg_id, 0);
    ck_assert(r->flow == 0);                        /* flows are added at the answer */
    /* the copies are the pool's own: the AoR read before may go */
    ck_assert_ptr_ne(APR_ARRAY_IDX(out, 0, sip_binding_t *), &oldb);

    /* a new AoR: what the change wrote, nothing else */
    out = rows_after(pool, &c, NULL);
    ck_assert_int_eq(out->nelts, 2);
    ck_assert_str_eq(APR_ARRAY_IDX(out, 0, sip_binding_t *)->contact, "SIP:a@10.0.0.1");
    ck_assert_str_eq(APR_ARRAY_IDX(out, 1, sip_binding_t *)->contact, "sip:c@10.0.0.3");
}
END_TEST

static Suite *location_dbd_suite(void)
{
    Suite *s = suite_create("location_dbd");
    TCase *tc = tcase_create("pure");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, dbd_note_payloads);
    tcase_add_test(tc, dbd_directives);
    tcase_add_test(tc, dbd_cache_rules);
    tcase_add_test(tc, dbd_rows_only);
    tcase_add_test(tc, dbd_rows_after);
    tcase_add_test(tc, dbd_pg_array_text);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- several engines (sip_handover.c, issue 19) ---- */

START_TEST(handover_marks)
{
    sip_engine_identity_set(0, 1);
    ck_assert_int_eq(sip_engine_of_branch("z9hG4bKmS0abc.1"), 0);
    ck_assert_int_eq(sip_engine_of_branch("z9hG4bKmSxabc.1"), 0);     /* one engine: all ours */
    ck_assert_int_eq(sip_engine_of_branch("z9hG4bKother"), -1);
    ck_assert_int_eq(sip_engine_of_tag("mS0123"), 0);
    ck_assert_int_eq(sip_engine_of_tag("abc"), -1);
    sip_engine_identity_set(1, 3);
    ck_assert_int_eq(sip_engine_self(), 1);
    ck_assert_int_eq(sip_engine_count(), 3);
    ck_assert_int_eq(sip_engine_mark(2), '2');
    ck_assert_int_eq(sip_engine_mark(31), 'v');
    ck_assert_int_eq(sip_engine_from_mark('2'), 2);
    ck_assert_int_eq(sip_engine_from_mark('3'), -1);     /* no such engine runs */
    ck_assert_int_eq(sip_engine_of_branch("z9hG4bKmS2abc.1"), 2);
    ck_assert_int_eq(sip_engine_of_branch("z9hG4bKmS9abc.1"), -1);
    ck_assert_int_eq(sip_engine_of_tag("mS1deadbeef"), 1);
    ck_assert_int_eq(sip_engine_of_tag("mSz"), -1);
    ck_assert_int_eq(sip_engine_of_tag(NULL), -1);
    ck_assert_int_lt(sip_engine_home("sip:alice@example.com"), 3);
    sip_engine_identity_set(0, 1);
}
END_TEST

START_TEST(handover_codec)
{
    sip_ho_origin_t o, d;
    sip_ho_kind_t kind;
    const char *text;
    apr_size_t tlen, n, hs = sip_handover_header_size();
    char *buf = apr_palloc(pool, hs + 64);

    memset(&o, 0, sizeof(o));
    o.kind = SIP_TP_UDP;
    sip_sockaddr_set(&o.peer, "192.0.2.7", 4711);
    sip_sockaddr_set(&o.local, "127.0.0.1", 5060);
    o.vhost = &o;
    o.engine = 1;
    o.cookie = 42;
    n = sip_handover_encode(buf, hs + 64, SIP_HO_QUERY, &o, "CANCEL x", 8);
    ck_assert_uint_eq(n, hs + 8);
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 1);
    ck_assert_int_eq(kind, SIP_HO_QUERY);
    ck_assert_int_eq(d.engine, 1);
    ck_assert_uint_eq(d.cookie, 42);
    ck_assert_ptr_eq(d.vhost, &o);
    ck_assert_str_eq(sip_sockaddr_ip(pool, &d.peer), "192.0.2.7");
    ck_assert_int_eq(sip_sockaddr_port(&d.peer), 4711);
    ck_assert_int_eq(sip_sockaddr_port(&d.local), 5060);
    ck_assert_uint_eq(tlen, 8);
    ck_assert(memcmp(text, "CANCEL x", 8) == 0);
    /* too small a buffer; a short datagram; unknown kind; UDP with a flow */
    ck_assert_uint_eq(sip_handover_encode(buf, hs + 7, SIP_HO_QUERY, &o, "CANCEL x", 8), 0);
    ck_assert_int_eq(sip_handover_decode(buf, hs - 1, &kind, &d, &text, &tlen), 0);
    buf[1] = 0;
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 0);
    buf[1] = SIP_HO_KIND_COUNT;
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 0);
    o.flow = 5;
    n = sip_handover_encode(buf, hs + 64, SIP_HO_DELIVER, &o, "", 0);
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 0);
    o.kind = SIP_TP_TCP;
    n = sip_handover_encode(buf, hs + 64, SIP_HO_DELIVER, &o, "", 0);
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 1);
    ck_assert_uint_eq(d.flow, 5);
    ck_assert_uint_eq(tlen, 0);
}
END_TEST

static volatile sig_atomic_t ho_stop;
static char ho_got[64];

static void ho_on_deliver(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                          apr_size_t len)
{
    apr_snprintf(ho_got, sizeof(ho_got), "%d %d %.*s", (int)kind, from->engine, (int)len, text);
    ho_stop = 1;
}

/* Two engines over a real channel: engine 0 hands a datagram to engine 1
 * (a forked process); with engine 1 not reading, the channel fills and
 * sends are dropped and counted, never blocking. */
START_TEST(handover_channel)
{
    sip_stats_t st;
    sip_loop_t *loop;
    sip_ho_origin_t o;
    pid_t pid;
    int status, i, dropped = 0;
    char *big = apr_palloc(pool, 65537);

    memset(&st, 0, sizeof(st));
    sip_stats = &st;
    ck_assert_int_eq(sip_handover_prepare(pool, 2), APR_SUCCESS);
    memset(&o, 0, sizeof(o));
    o.kind = SIP_TP_UDP;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        sip_engine_identity_set(1, 2);
        if (sip_loop_create(&loop, pool) != APR_SUCCESS
            || sip_handover_start(loop, pool) != APR_SUCCESS)
            _exit(2);
        sip_handover_on(SIP_HO_DELIVER, ho_on_deliver);
        sip_loop_run(loop, &ho_stop);
        _exit(strcmp(ho_got, "1 0 SIP/2.0 200 OK") == 0 && st.ho_received == 1 ? 0 : 1);
    }
    sip_engine_identity_set(0, 2);
    ck_assert_int_eq(sip_loop_create(&loop, pool), APR_SUCCESS);
    ck_assert_int_eq(sip_handover_start(loop, pool), APR_SUCCESS);
    ck_assert_int_eq(sip_handover_send(0, SIP_HO_DELIVER, &o, "x", 1), APR_EINVAL);  /* self */
    ck_assert_int_eq(sip_handover_send(1, SIP_HO_DELIVER, &o, "SIP/2.0 200 OK", 14),
                     APR_SUCCESS);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_uint_eq(st.ho_sent, 1);
    /* nobody reads engine 1's channel now */
    memset(big, 'a', 65537);
    for (i = 0; i < 10000 && !dropped; i++)
        dropped = sip_handover_send(1, SIP_HO_DELIVER, &o, big, 60000) == APR_EAGAIN;
    ck_assert_int_eq(dropped, 1);
    ck_assert_uint_eq(st.ho_dropped, 1);
    /* larger than any SIP message we take: dropped, counted */
    ck_assert_int_eq(sip_handover_send(1, SIP_HO_DELIVER, &o, big, 65537), APR_EAGAIN);
    ck_assert_uint_eq(st.ho_dropped, 2);
    sip_engine_identity_set(0, 1);
    sip_stats = &unattached;
}
END_TEST

static Suite *handover_suite(void)
{
    Suite *s = suite_create("handover");
    TCase *tc = tcase_create("handover");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, handover_marks);
    tcase_add_test(tc, handover_codec);
    tcase_add_test(tc, handover_channel);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- journal compaction from the file's text (several engines) ---- */

static const char *jc_b(apr_pool_t *p, const char *aor, const char *contact, int cseq,
                        apr_time_t exp)
{
    return apr_psprintf(p, "B\t%s\t%s\t\tcid\t%d\t%" APR_TIME_T_FMT "\t1000\t\t\t\t\t\t0\n",
                        aor, contact, cseq, exp);
}

static char *jc(const char *text, apr_time_t now, apr_size_t *in, apr_size_t *out)
{
    return journal_compact_text(pool, text, strlen(text), now, in, out);
}

START_TEST(journal_compact_state)
{
    apr_time_t now = apr_time_now(), later = now + apr_time_from_sec(600);
    apr_size_t in, out, in2, out2;
    char *text = apr_pstrcat(pool, "V\t3\n",
        jc_b(pool, "sip:a@x", "sip:a1@h", 1, later),
        jc_b(pool, "sip:a@x", "sip:a2@h", 1, later),
        "D\tsip:a@x\tsip:a1@h\n",
        jc_b(pool, "sip:b@x", "sip:b1@h", 1, later),
        "A\tsip:b@x\n",
        jc_b(pool, "sip:b@x", "sip:b2@h", 1, now - 1),          /* expired */
        "K\tsip:z@x\n",
        jc_b(pool, "sip:a@x", "sip:a2@h", 5, later),            /* refreshed */
        jc_b(pool, "sip:t@x", "sip:tab\\tbed@h", 2, later),      /* escaped TAB kept */
        "garbage line\n", NULL);
    char *c = jc(text, now, &in, &out), *c2, *both, *cut, *front;
    apr_size_t L = strlen(c), S = strlen(text), k;

    ck_assert_uint_eq(in, 11);
    ck_assert_uint_eq(out, 5);      /* V, K b, K z, B a2, B tab */
    ck_assert_str_eq(c, apr_pstrcat(pool, "V\t3\n", "K\tsip:b@x\n", "K\tsip:z@x\n",
                                    jc_b(pool, "sip:a@x", "sip:a2@h", 5, later),
                                    jc_b(pool, "sip:t@x", "sip:tab\\tbed@h", 2, later), NULL));
    /* the result replays to itself */
    c2 = jc(c, now, &in2, &out2);
    ck_assert_str_eq(c2, c);
    /* appended after the old text (the first step of the rewrite) */
    both = apr_pstrcat(pool, text, c, NULL);
    ck_assert_str_eq(jc(both, now, NULL, NULL), c);
    /* a crash while C (padded to an old line's end) is written over the
     * old text: a prefix of it at any line end, the rest of the old
     * text, then the whole C; each replays to C */
    front = journal_compact_pad(pool, c, text, S);
    ck_assert_uint_lt(L, S);
    ck_assert_uint_gt(strlen(front), L);
    ck_assert_int_eq(front[strlen(front) - 1], '\n');
    ck_assert_int_eq(text[strlen(front) - 1], '\n');
    ck_assert(strncmp(front, c, L) == 0);
    for (k = 0; k <= strlen(front); k++) {
        if (k && front[k - 1] != '\n')
            continue;
        cut = apr_pstrcat(pool, apr_pstrndup(pool, front, k), text + k, c, NULL);
        ck_assert_str_eq(jc(cut, now, NULL, NULL), c);
    }
}
END_TEST

START_TEST(journal_compact_versions)
{
    apr_time_t now = apr_time_now(), later = now + apr_time_from_sec(600);
    /* version 1: S lines, no escapes (a backslash is data) */
    char *v1 = apr_psprintf(pool, "S\tsip:o@x\tsip:o\\1@h\t\tcid\t3\t%" APR_TIME_T_FMT
                            "\t500\t\n", later);
    char *c = jc(v1, now, NULL, NULL);
    ck_assert_str_eq(c, apr_psprintf(pool, "V\t3\nB\tsip:o@x\tsip:o\\\\1@h\t\tcid\t3\t%"
                                     APR_TIME_T_FMT "\t500\t\t\t\t\t\t0\n", later));
    /* an instance names its binding: a D with it removes the B */
    c = jc(apr_psprintf(pool, "V\t3\nB\tsip:i@x\tsip:i1@h\t\tcid\t1\t%" APR_TIME_T_FMT
                        "\t1000\t\t\t\t\t<urn:uuid:1>\t1\nD\tsip:i@x\tsip:other@h\t"
                        "<urn:uuid:1>\t1\n", later), now, NULL, NULL);
    ck_assert_str_eq(c, "V\t3\nK\tsip:i@x\n");
    ck_assert_str_eq(jc("", now, NULL, NULL), "V\t3\n");
}
END_TEST

START_TEST(replica_pieces_split)
{
    apr_array_header_t *pc;
    char *text = "A\tsip:a@x\n", *line;
    const char *all;
    int i;

    /* 300 bindings of ~60 bytes in pieces of at most 1000 bytes */
    for (i = 0; i < 300; i++) {
        line = apr_psprintf(pool, "B\tsip:a@x\tsip:a%03d@h:5060\t\tcid\t1\t999\t1000\t\t\n", i);
        text = apr_pstrcat(pool, text, line, NULL);
    }
    text = apr_pstrcat(pool, text, "A\tsip:b@x\n", NULL);
    pc = sip_location_replica_pieces(pool, text, NULL, 1000);
    ck_assert_int_gt(pc->nelts, 10);
    all = "";
    for (i = 0; i < pc->nelts; i++) {
        const char *t = APR_ARRAY_IDX(pc, i, const char *);
        ck_assert_uint_le(strlen(t), 1000);
        ck_assert_int_eq(t[strlen(t) - 1], '\n');
        if (i)      /* later pieces go on with the AoR, never reset it */
            ck_assert(strncmp(t, "C\tsip:a@x\n", 10) == 0);
        all = apr_pstrcat(pool, all, i ? t + 10 : t, NULL);
    }
    ck_assert_str_eq(all, text);
    /* the SYNC mark starts every piece; a small text is one piece */
    pc = sip_location_replica_pieces(pool, apr_pstrcat(pool, "F\tflows\n", text, NULL),
                                     "F\tflows\n", 1000);
    for (i = 0; i < pc->nelts; i++)
        ck_assert(strncmp(APR_ARRAY_IDX(pc, i, const char *), "F\tflows\n", 8) == 0);
    pc = sip_location_replica_pieces(pool, "A\tsip:c@x\n", NULL, 1000);
    ck_assert_int_eq(pc->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(pc, 0, const char *), "A\tsip:c@x\n");
    pc = sip_location_replica_pieces(pool, "", NULL, 1000);
    ck_assert_int_eq(pc->nelts, 1);
    ck_assert_str_eq(APR_ARRAY_IDX(pc, 0, const char *), "");
}
END_TEST

static Suite *journal_compact_suite(void)
{
    Suite *s = suite_create("journal_compact");
    TCase *tc = tcase_create("journal_compact");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, journal_compact_state);
    tcase_add_test(tc, journal_compact_versions);
    tcase_add_test(tc, replica_pieces_split);
    suite_add_tcase(s, tc);
    return s;
}


/* ================================================================== */
/* several engines, the gaps of issue 19: one nonce secret for every
 * engine (sip_auth.c) and the TLS subject carried by a hand-over */

START_TEST(engines_nonce_shared)
{
    static const unsigned char key[16] = "0123456789abcdef";
    static const unsigned char other[16] = "fedcba9876543210";
    apr_time_t now = apr_time_now(), made = 0;
    const char *n0, *n1;
    int stale = 0;

    /* engine 0 (the parent's key, inherited by the fork) makes a nonce */
    sip_auth_set_secret(key, sizeof(key));
    sip_auth_init(pool);
    n0 = make_nonce(pool, now);
    /* engine 1, or engine 0 restarted: sip_auth_init again keeps the key */
    sip_auth_init(pool);
    ck_assert_int_eq(check_nonce(pool, n0, apr_time_from_sec(300), &stale, &made), 1);
    ck_assert_int_eq(stale, 0);
    ck_assert(made == now);
    /* and engine 1's nonces verify at engine 0 */
    n1 = make_nonce(pool, now + 1);
    ck_assert_int_eq(check_nonce(pool, n1, apr_time_from_sec(300), &stale, &made), 1);
    /* a nonce-count seen at one engine is a replay at the other, and at
     * an engine started again: one table (sip_nonce.c) */
    ck_assert_int_eq(sip_nonce_count(n0, 1, now + apr_time_from_sec(300), now), SIP_NC_FRESH);
    sip_auth_init(pool);
    ck_assert_int_eq(sip_nonce_count(n0, 1, now + apr_time_from_sec(300), now), SIP_NC_REPLAY);
    /* a key of its own (what each engine had before) refuses them */
    sip_auth_set_secret(other, sizeof(other));
    ck_assert_int_eq(check_nonce(pool, n0, apr_time_from_sec(300), &stale, &made), 0);
    sip_auth_set_secret(key, sizeof(key));
    ck_assert_int_eq(check_nonce(pool, n0, apr_time_from_sec(300), &stale, &made), 1);
}
END_TEST

START_TEST(engines_handover_subject)
{
    sip_ho_origin_t o, d;
    sip_ho_kind_t kind;
    const char *text, *dn = "CN=alice,OU=phones,O=mod_sip tests";
    apr_size_t tlen, n, hs = sip_handover_header_size(), size = hs + 4096;
    char *buf = apr_palloc(pool, size), *big;

    memset(&o, 0, sizeof(o));
    o.kind = SIP_TP_TLS;
    sip_sockaddr_set(&o.peer, "192.0.2.7", 4711);
    sip_sockaddr_set(&o.local, "127.0.0.1", 5061);
    o.engine = 1;
    o.flow = 9;
    o.tls_subject = dn;
    n = sip_handover_encode(buf, size, SIP_HO_DELIVER, &o, "REGISTER x", 10);
    ck_assert_uint_eq(n, hs + strlen(dn) + 1 + 10);
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 1);
    ck_assert_ptr_nonnull(d.tls_subject);
    ck_assert_str_eq(d.tls_subject, dn);
    ck_assert_uint_eq(tlen, 10);
    ck_assert(memcmp(text, "REGISTER x", 10) == 0);
    /* a subject that is not one NUL-terminated string is refused */
    buf[hs + strlen(dn)] = 'x';
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 0);
    buf[hs + strlen(dn)] = '\0';
    buf[hs + 3] = '\0';
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 0);
    /* its length past the datagram */
    ck_assert_int_eq(sip_handover_decode(buf, hs + 4, &kind, &d, &text, &tlen), 0);
    /* too long to carry: the message goes without it */
    big = apr_palloc(pool, SIP_HO_SUBJECT_MAX + 10);
    memset(big, 'a', SIP_HO_SUBJECT_MAX + 9);
    big[SIP_HO_SUBJECT_MAX + 9] = '\0';
    o.tls_subject = big;
    n = sip_handover_encode(buf, size, SIP_HO_DELIVER, &o, "REGISTER x", 10);
    ck_assert_uint_eq(n, hs + 10);
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 1);
    ck_assert_ptr_null(d.tls_subject);
    /* none: as before */
    o.tls_subject = NULL;
    n = sip_handover_encode(buf, size, SIP_HO_DELIVER, &o, "REGISTER x", 10);
    ck_assert_uint_eq(n, hs + 10);
    ck_assert_int_eq(sip_handover_decode(buf, n, &kind, &d, &text, &tlen), 1);
    ck_assert_ptr_null(d.tls_subject);
}
END_TEST

static Suite *engines_gaps_suite(void)
{
    Suite *s = suite_create("engines_gaps");
    TCase *tc = tcase_create("gaps");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, engines_nonce_shared);
    tcase_add_test(tc, engines_handover_subject);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- sip_freelist.c: free lists of small malloc() blocks for libosip2 ---- */

START_TEST(freelist_classes)
{
    ck_assert_int_eq(sip_freelist_class(0), 1);
    ck_assert_int_eq(sip_freelist_class(1), 1);
    ck_assert_int_eq(sip_freelist_class(16), 1);
    ck_assert_int_eq(sip_freelist_class(17), 2);
    ck_assert_int_eq(sip_freelist_class(512), 32);
    ck_assert_int_eq(sip_freelist_class(513), 0);
}
END_TEST

START_TEST(freelist_reuse)
{
    sip_freelist_t fl;
    char *a, *b, *c;

    sip_freelist_init(&fl, 4096);
    a = sip_freelist_get(&fl, 40);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_ge(malloc_usable_size(a), 40);
    memset(a, 'x', 40);
    ck_assert_uint_eq(fl.misses, 1);
    sip_freelist_put(&fl, a);
    ck_assert_uint_gt(fl.held, 0);
    /* the same class: the block kept, not a new one */
    b = sip_freelist_get(&fl, 33);
    ck_assert_ptr_eq(b, a);
    ck_assert_uint_eq(fl.hits, 1);
    ck_assert_uint_eq(fl.held, 0);
    memset(b, 'y', 33);
    /* a larger class never gets a smaller block */
    sip_freelist_put(&fl, b);
    c = sip_freelist_get(&fl, 200);
    ck_assert_ptr_ne(c, b);
    ck_assert_uint_ge(malloc_usable_size(c), 200);
    memset(c, 'z', 200);
    free(c);                    /* any block may go back to free() */
    /* over 512 bytes: plain malloc, and put() hands it to free() */
    c = sip_freelist_get(&fl, 4000);
    ck_assert_ptr_nonnull(c);
    memset(c, 'w', 4000);
    sip_freelist_put(&fl, c);
    ck_assert_uint_le(fl.held, 48);
    sip_freelist_drain(&fl);
    ck_assert_uint_eq(fl.held, 0);
}
END_TEST

START_TEST(freelist_foreign_blocks)
{
    sip_freelist_t fl;
    char *m = malloc(100), *g;
    size_t u = malloc_usable_size(m);

    ck_assert_ptr_nonnull(m);
    sip_freelist_init(&fl, 4096);
    /* a block malloc() gave: its class comes from its real size */
    sip_freelist_put(&fl, m);
    g = sip_freelist_get(&fl, u / SIP_FREELIST_GRAIN * SIP_FREELIST_GRAIN);
    ck_assert_ptr_eq(g, m);
    memset(g, 'a', u / SIP_FREELIST_GRAIN * SIP_FREELIST_GRAIN);
    free(g);
    sip_freelist_put(&fl, NULL);
    ck_assert_uint_eq(fl.held, 0);
}
END_TEST

START_TEST(freelist_budget)
{
    sip_freelist_t fl;
    void *p[16], *q[16], *one;
    int i;

    sip_freelist_init(&fl, 800);        /* a class keeps at most 100 bytes */
    for (i = 0; i < 16; i++)
        p[i] = sip_freelist_get(&fl, 32);
    for (i = 0; i < 16; i++) {
        sip_freelist_put(&fl, p[i]);
        ck_assert_uint_le(fl.held, 100);
    }
    ck_assert_uint_gt(fl.held, 0);
    /* one class full (blocks realloc() grew, say): another still keeps */
    one = sip_freelist_get(&fl, 8);
    sip_freelist_put(&fl, one);
    ck_assert_ptr_eq(sip_freelist_get(&fl, 8), one);
    free(one);
    /* what was kept comes back; then malloc() again */
    for (i = 0; i < 16; i++)
        q[i] = sip_freelist_get(&fl, 32);
    ck_assert_uint_eq(fl.held, 0);
    ck_assert_uint_ge(fl.hits, 2);
    ck_assert_uint_le(fl.hits, 1 + 100 / 32);
    for (i = 0; i < 16; i++)
        free(q[i]);
    /* the whole budget holds across classes */
    sip_freelist_init(&fl, 160);
    for (i = 0; i < 16; i++)
        p[i] = sip_freelist_get(&fl, 16 * (i % 8 + 1));
    for (i = 0; i < 16; i++) {
        sip_freelist_put(&fl, p[i]);
        ck_assert_uint_le(fl.held, 160);
    }
    sip_freelist_drain(&fl);
    ck_assert_uint_eq(fl.held, 0);
}
END_TEST

START_TEST(freelist_resize)
{
    sip_freelist_t fl;
    char *a, *b;

    sip_freelist_init(&fl, 4096);
    b = sip_freelist_resize(&fl, NULL, 20);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "0123456789abcdefghi", 20);
    a = sip_freelist_resize(&fl, b, 10);     /* shrinking keeps the block */
    ck_assert_ptr_eq(a, b);
    a = sip_freelist_resize(&fl, a, 3000);
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(a, "0123456789abcdefghi");
    memset(a, 'q', 3000);
    sip_freelist_put(&fl, a);
    sip_freelist_drain(&fl);
}
END_TEST

/* libosip2 with the free lists installed: messages parse and free alike,
 * and the second parse reuses the first one's blocks. */
START_TEST(freelist_osip)
{
    unsigned long hits0, hits1, misses;
    apr_size_t held;
    int i, on = sip_message_use_freelists();
    const char *text = OPTIONS_TEXT();

#ifdef SIP_OSIP_FREELIST_OFF
    ck_assert_int_eq(on, 0);
#else
    if (!RUNNING_ON_VALGRIND)
        ck_assert_int_eq(on, 1);
#endif
    for (i = 0; i < 3; i++) {
        apr_pool_t *p;
        sip_msg_t *m = NULL;
        sip_msg_error_t err;
        apr_size_t len = 0;

        sip_message_freelist_stats(&hits0, &misses, &held);
        apr_pool_create(&p, pool);
        ck_assert_int_eq(parse_status(text, &LIM, 1, &m, NULL), 0);
        ck_assert_str_eq(sip_msg_method(m), "OPTIONS");
        ck_assert_int_eq(sip_msg_parse(p, text, strlen(text), &LIM, 1, &m, &err), APR_SUCCESS);
        ck_assert_ptr_nonnull(sip_msg_response_text(p, m, 200, "OK", "t1", NULL, NULL, NULL, 0,
                                                     &len));
        ck_assert_uint_gt(len, 0);
        apr_pool_destroy(p);
        sip_message_freelist_stats(&hits1, &misses, &held);
        if (on && i > 0)
            ck_assert_uint_gt(hits1, hits0);
        if (!on)
            ck_assert_uint_eq(hits1, 0);
    }
}
END_TEST

/* osip_feed hands libosip2 the fields split_raw cut out: the message it
 * builds is the one osip_message_parse builds from the whole text (the
 * same text again from osip_message_to_str), and what it cannot take the
 * same way (folded lines, a body, a lone CR, a field libosip2 refuses) it
 * leaves to osip_message_parse. */
START_TEST(parse_fed_like_osip)
{
    static const char *const fed[] = {
        "OPTIONS sip:bench@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"
        "From: <sip:bench@127.0.0.1:5070>;tag=1B1\r\nTo: <sip:bench@127.0.0.1:5060>\r\n"
        "Call-ID: 1-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Accept: application/sdp\r\nContent-Length: 0\r\n\r\n",
        "INVITE sip:bob@example.com;transport=tcp SIP/2.0\n"
        "v: SIP/2.0/TCP a.example.com ;branch=z9hG4bKa , SIP/2.0/UDP  b.example.com:5062;branch=z9hG4bKb\n"
        "Via: SIP/2.0/UDP c.example.com;branch=z9hG4bKc;received=192.0.2.1\n"
        "f: \"Alice, A\" <sip:alice@example.com>;tag=88\nt: sip:bob@example.com\n"
        "i: abc@host\nCSeq  : 7 INVITE\nMax-Forwards:\t10\n"
        "Contact: <sip:a@192.0.2.1>;q=0.5, \"Bob, Jr\" <sip:c@192.0.2.2>;expires=60\n"
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\n"
        "Record-Route: <sip:p0.example.com;lr>\n"
        "Authorization: Digest username=\"alice\", realm=\"x\", nonce=\"n\", uri=\"sip:bob@example.com\", "
        "response=\"0123456789abcdef0123456789abcdef\"\n"
        "Subject:\nX-Empty: \nX-Odd:   spaced value   \nSupported: path, outbound\n"
        "Allow: INVITE, ACK\nUser-Agent: test, with comma\n\n",
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr\r\n"
        "From: <sip:u@example.com>;tag=1\r\nTo: <sip:u@example.com>\r\nCall-ID: r1\r\n"
        "CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContact: *\r\nExpires: 0\r\n\r\n",
    };
    static const char *const not_fed[] = {
        /* a folded field */
        "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: f1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nSubject: one\r\n two\r\n\r\n",
        /* a body */
        "MESSAGE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK2\r\n"
        "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: f2\r\n"
        "CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n"
        "Content-Length: 2\r\n\r\nhi",
    };
    int i;

    for (i = 0; i < (int)(sizeof(fed) / sizeof(fed[0])) + (int)(sizeof(not_fed) / sizeof(not_fed[0]));
         i++) {
        int is_fed = i < (int)(sizeof(fed) / sizeof(fed[0]));
        const char *text = is_fed ? fed[i] : not_fed[i - sizeof(fed) / sizeof(fed[0])];
        apr_pool_t *p;
        sip_msg_t *m = NULL;
        sip_msg_error_t err;
        osip_message_t *whole = NULL, *fm = NULL;
        char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;

        apr_pool_create(&p, pool);
        ck_assert_int_eq(sip_msg_parse(p, text, strlen(text), &LIM, 1, &m, &err), APR_SUCCESS);
        ck_assert_int_eq(osip_message_init(&fm), 0);
        ck_assert_int_eq(osip_feed(m, &fm), is_fed ? 0 : -1);
        ck_assert_int_eq(osip_message_init(&whole), 0);
        ck_assert_int_eq(osip_message_parse(whole, text, strlen(text)), 0);
        ck_assert_int_eq(osip_message_to_str(whole, &a, &alen), 0);
        if (is_fed) {
            ck_assert_int_eq(osip_message_to_str(fm, &b, &blen), 0);
            ck_assert_str_eq(b, a);
            osip_free(b);
            b = NULL;
        }
        /* what the server keeps is libosip2's reading either way */
        ck_assert_int_eq(osip_message_to_str(m->m, &b, &blen), 0);
        ck_assert_str_eq(b, a);
        osip_free(a);
        osip_free(b);
        osip_message_free(whole);
        osip_message_free(fm);
        apr_pool_destroy(p);
    }
    {
        /* a field libosip2 refuses, and fields not ended by an empty line
         * (a datagram may end so: libosip2 refuses it, found by
         * fuzz_parse): left to osip_message_parse, which decides as before */
        static const char *const bad[] = {
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK3\r\n"
            "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n"
            "Call-ID: f3\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Contact: <sip:a@127.0.0.1\r\n\r\n",
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK4\r\n"
            "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n"
            "Call-ID: f4\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70",
        };
        for (i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++) {
            osip_message_t *whole = NULL;
            int osip_ok;

            ck_assert_int_eq(osip_message_init(&whole), 0);
            osip_ok = osip_message_parse(whole, bad[i], strlen(bad[i])) == 0;
            osip_message_free(whole);
            ck_assert_int_eq(parse_status(bad[i], &LIM, 1, NULL, NULL), osip_ok ? 0 : 400);
        }
    }
}
END_TEST

/* A name absent from SipDirectory is answered from the directory's listing
 * while the directory is unchanged; a change is seen at once. */
START_TEST(lookup_absent_by_listing)
{
    struct stat st;
    sip_cgi_dirstamp_t d;
    apr_time_t now;
    const char *path, *why;
    char p1[PATH_MAX * 2];

    settle();
    ck_assert_int_eq(stat(cache_dir, &st), 0);
    sip_cgi_dirstamp(&st, &d);
    now = apr_time_now();
    ck_assert(absent_by_listing(cache_dir, "nobody@h", &d, now));
    ck_assert(!absent_by_listing(cache_dir, "a@h", &d, now));
    /* another case: left to lstat (a case-folding file system) */
    ck_assert(!absent_by_listing(cache_dir, "A@H", &d, now));
    ck_assert_int_eq(cached_locate("nobody@h", &path, &why), 404);
    ck_assert_int_eq(cached_locate("A@H", &path, &why), 404);
    ck_assert_int_eq(cached_locate("a@h", &path, &why), 0);
    /* added: the directory's stamp changes, the listing is not used */
    write_file(cache_dir, "nobody@h", 0755);
    ck_assert_int_eq(stat(cache_dir, &st), 0);
    sip_cgi_dirstamp(&st, &d);
    ck_assert(!absent_by_listing(cache_dir, "nobody@h", &d, apr_time_now()));
    ck_assert_int_eq(cached_locate("nobody@h", &path, &why), 0);
    settle();
    ck_assert_int_eq(stat(cache_dir, &st), 0);
    sip_cgi_dirstamp(&st, &d);
    ck_assert(!absent_by_listing(cache_dir, "nobody@h", &d, apr_time_now()));
    ck_assert(absent_by_listing(cache_dir, "other@h", &d, apr_time_now()));
    /* removed */
    snprintf(p1, sizeof(p1), "%s/nobody@h", cache_dir);
    ck_assert_int_eq(unlink(p1), 0);
    ck_assert_int_eq(cached_locate("nobody@h", &path, &why), 404);
    /* past the TTL the directory is read again, unchanged or not */
    settle();
    ck_assert_int_eq(stat(cache_dir, &st), 0);
    sip_cgi_dirstamp(&st, &d);
    now = apr_time_now();
    ck_assert(absent_by_listing(cache_dir, "nobody@h", &d, now));
    ck_assert_int_eq(listing.checked, now);
    ck_assert(absent_by_listing(cache_dir, "nobody@h", &d, now + SIP_CGI_LOOKUP_TTL));
    ck_assert_int_eq(listing.checked, now + SIP_CGI_LOOKUP_TTL);
}
END_TEST

/* The raw scan for a REGISTER's AoR gives what the parser's To gives
 * (sip_uri_aor of the parsed To), or NULL: never another AoR. */
static const char *scan_case(const char *to_line, const char *method)
{
    return apr_pstrcat(pool, method, " sip:h.example SIP/2.0\r\n"
                       "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK-scan\r\n"
                       "From: <sip:a@h.example>;tag=1\r\n", to_line,
                       "Call-ID: scan@192.0.2.1\r\nCSeq: 1 ", method, "\r\n"
                       "Contact: <sip:a@192.0.2.1:5062>\r\nMax-Forwards: 70\r\n"
                       "Content-Length: 0\r\n\r\n", NULL);
}

START_TEST(scan_register_aor)
{
    static const struct {
        const char *to;         /* the To line(s) */
        const char *want;       /* the scan's answer */
    } cases[] = {
        {"To: <sip:alice@H.Example>\r\n", "sip:alice@h.example"},
        {"To: <sip:Alice@h.example:5070;transport=udp>;tag=x\r\n", "sip:Alice@h.example"},
        {"to:<SIPS:bob@h.example>\r\n", "sips:bob@h.example"},
        {"t: sip:carol@h.example;tag=9\r\n", "sip:carol@h.example"},
        {"TO :  Dave <sip:dave@h.example>\r\n", "sip:dave@h.example"},
        {"To: sip:erin@h.example:5060\r\n", "sip:erin@h.example"},
        {"To: <sip:f.g-h_i!~*'()&=+$,@h.example>\r\n", "sip:f.g-h_i!~*'()&=+$,@h.example"},
        {"To: <sip:192.0.2.7@192.0.2.9>\r\n", "sip:192.0.2.7@192.0.2.9"},
        /* left to the parser */
        {"To: \"Quoted <x>\" <sip:q@h.example>\r\n", NULL},
        {"To: <sip:es%41caped@h.example>\r\n", NULL},
        {"To: <sip:user:pw@h.example>\r\n", NULL},
        {"To: <sip:user;p=1@h.example>\r\n", NULL},
        {"To: <sip:h.example>\r\n", NULL},
        {"To: <tel:+15551234>\r\n", NULL},
        {"To: <sip:v6@[2001:db8::1]>\r\n", NULL},
        {"To: <sip:folded@h.example>\r\n ;tag=1\r\n", NULL},
        {"To: <sip:port@h.example:x>\r\n", NULL},
        {"To: <sip:hdr@h.example?subject=x>\r\n", NULL},
        {"To: sip:sp@h.example \r\n", NULL},
        {"Tone: <sip:tone@h.example>\r\nTo: <sip:real@h.example>\r\n", "sip:real@h.example"},
        {"", NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *text = scan_case(cases[i].to, "REGISTER");
        const char *got = sip_msg_scan_register_aor(pool, text, strlen(text));
        sip_msg_t *m = NULL;

        if (!cases[i].want) {
            ck_assert_msg(got == NULL, "case %u: %s", (unsigned)i, got);
            continue;
        }
        ck_assert_msg(got && !strcmp(got, cases[i].want), "case %u: %s", (unsigned)i,
                      got ? got : "NULL");
        /* the parser of record agrees */
        ck_assert_int_eq(parse_status(text, &LIM, 1, &m, NULL), 0);
        ck_assert_str_eq(sip_replica_register_aor(pool, m), got);
        /* only a REGISTER, and only its header section */
        text = scan_case(cases[i].to, "OPTIONS");
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, text, strlen(text)));
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, text, 8));
    }
    {
        const char *body = "REGISTER sip:h SIP/2.0\r\nVia: x\r\n\r\nTo: <sip:body@h>\r\n";
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, body, strlen(body)));
        body = "REGISTER sip:h SIP/2.0\r\nTo: <sip:cut@h";
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, body, strlen(body)));
        body = "REGISTER sip:h SIP/2.0\r\nTo: <sip:cut@h>\r";
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, body, strlen(body)));
        /* found by fuzz_regscan: a datagram ending in "T"; a To line ended
         * by a bare LF, whose next line held an AoR the parser did not give */
        body = "REGISTER sip:h SIP/2.0\r\nT";
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, body, strlen(body)));
        body = "REGISTER sip:h SIP/2.0\r\nTo: \nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\n\r\n";
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, body, strlen(body)));
        body = "REGISTER sip:h SIP/2.0\nTo: <sip:lf@h>\r\n\r\n";
        ck_assert_ptr_null(sip_msg_scan_register_aor(pool, body, strlen(body)));
    }
}
END_TEST

static Suite *freelist_suite(void)
{
    Suite *s = suite_create("freelist");
    TCase *tc = tcase_create("freelist");

    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, freelist_classes);
    tcase_add_test(tc, freelist_reuse);
    tcase_add_test(tc, freelist_foreign_blocks);
    tcase_add_test(tc, freelist_budget);
    tcase_add_test(tc, freelist_resize);
    tcase_add_test(tc, freelist_osip);
    tcase_add_test(tc, parse_fed_like_osip);
    tcase_add_test(tc, scan_register_aor);
    suite_add_tcase(s, tc);
    tc = tcase_create("absent_by_listing");
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_unchecked_fixture(tc, cache_setup, cache_teardown);
    tcase_add_test(tc, lookup_absent_by_listing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed, run;

    apr_initialize();
    atexit(apr_terminate);
    sip_message_init();

    sr = srunner_create(frame_suite());
    srunner_add_suite(sr, split_suite());
    srunner_add_suite(sr, name_suite());
    srunner_add_suite(sr, locate_suite());
    srunner_add_suite(sr, parse_suite());
    srunner_add_suite(sr, response_suite());
    srunner_add_suite(sr, timer_suite());
    srunner_add_suite(sr, stats_suite());
    srunner_add_suite(sr, relay_suite());
    srunner_add_suite(sr, auth_suite());
    srunner_add_suite(sr, route_suite());
    srunner_add_suite(sr, location_suite());
    srunner_add_suite(sr, limits_suite());
    srunner_add_suite(sr, upload_suite());
    srunner_add_suite(sr, cpl_suite());
    srunner_add_suite(sr, cplrun_suite());
    srunner_add_suite(sr, script_store_suite());
    srunner_add_suite(sr, mime_suite());
    srunner_add_suite(sr, cpl_time_suite());
    srunner_add_suite(sr, cpl_mail_suite());
    srunner_add_suite(sr, explode_suite());
    srunner_add_suite(sr, uri_list_suite());
    srunner_add_suite(sr, consent_suite());
    srunner_add_suite(sr, plumb_suite());
    srunner_add_suite(sr, rules_suite());
    srunner_add_suite(sr, namemap_suite());
    srunner_add_suite(sr, lists_suite());
    srunner_add_suite(sr, forward_suite());
    srunner_add_suite(sr, fwd_owner_suite());
    srunner_add_suite(sr, flows_suite());
    srunner_add_suite(sr, ws_suite());
    srunner_add_suite(sr, tls_suite());
    srunner_add_suite(sr, fcgi_suite());
    srunner_add_suite(sr, stateless_suite());
    srunner_add_suite(sr, stun_suite());
    srunner_add_suite(sr, natob_suite());
    srunner_add_suite(sr, dns_suite());
    srunner_add_suite(sr, lean_suite());
    srunner_add_suite(sr, replica_suite());
    srunner_add_suite(sr, location_dbd_suite());
    srunner_add_suite(sr, handover_suite());
    srunner_add_suite(sr, journal_compact_suite());
    srunner_add_suite(sr, engines_gaps_suite());
    srunner_add_suite(sr, freelist_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    run = srunner_ntests_run(sr);
    srunner_free(sr);
    if (run == 0) {
        fprintf(stderr, "no tests ran\n");
        return EXIT_FAILURE;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
