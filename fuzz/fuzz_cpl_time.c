/* CPL time switches and mail URLs, both written by users in scripts:
 * sip_cpl_time_compile + sip_cpl_time_match (libical behind them) and
 * sip_cpl_mail_message.
 *
 * Input: the first byte picks the target: 'm' makes the rest one mailto:
 * URL; 't' takes the next 8 bytes as an offset of 'now' from 2026-12-06;
 * then NUL-separated fields: the tzid (empty: none) and attribute
 * name/value pairs.  'now' is moved around a few times after that. */
#include "fuzz_common.h"

#include <string.h>

#define FUZZ_MAX_ATTRS 24

static int mail_input(apr_pool_t *p, const uint8_t *data, size_t size)
{
    const char *why = NULL;
    const char *url = apr_pstrmemdup(p, (const char *)data, size);
    const char *m = sip_cpl_mail_message(p, url, "cpl@example.org", "call info\r\nline", &why);
    if (!m) {
        if (!why)
            __builtin_trap();           /* a refusal always says why */
        return 0;
    }
    /* whatever the URL, the header part has no line that is not a known
     * header, and no bare CR or LF anywhere */
    const char *end = strstr(m, "\r\n\r\n");
    if (!end)
        __builtin_trap();
    for (const char *c = m; *c; c++)
        if ((*c == '\n' && (c == m || c[-1] != '\r')) || (*c == '\r' && c[1] != '\n'))
            __builtin_trap();
    static const char *const known[] = {"From: ", "To: ", "Cc: ", "Date: ", "Subject: ",
        "In-Reply-To: ", "Keywords: ", "Comments: ", "MIME-Version: ", "Content-Type: ",
        "Content-Transfer-Encoding: ", "Auto-Submitted: ", NULL};
    for (const char *line = m; line < end + 2; line = strstr(line, "\r\n") + 2) {
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = !strncmp(line, known[i], strlen(known[i]));
        if (!ok)
            __builtin_trap();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *attrs[2 * FUZZ_MAX_ATTRS + 1];
    const char *why = NULL;
    apr_time_t now = apr_time_from_sec(1796551200);     /* 2026-12-06 */
    int n = 0;

    if (size && data[0] == 'm') {
        mail_input(p, data + 1, size - 1);
        return fuzz_done();
    }
    if (size > 9 && data[0] == 't') {
        apr_int64_t x;
        memcpy(&x, data + 1, 8);
        now += x % apr_time_from_sec((apr_int64_t)200 * 366 * 86400);
        data += 9;
        size -= 9;
    }
    char *buf = apr_pstrmemdup(p, (const char *)data, size);
    char *end = buf + size, *tzid = buf, *f = buf + strlen(buf) + 1;
    while (f < end && n < 2 * FUZZ_MAX_ATTRS) {
        attrs[n++] = f;
        f += strlen(f) + 1;
    }
    if (n % 2)
        n--;
    attrs[n] = NULL;
    sip_cpl_time_t *t = sip_cpl_time_compile(p, *tzid ? tzid : NULL, NULL, attrs, &why);
    if (!t) {
        if (!why)
            __builtin_trap();
        return fuzz_done();
    }
    /* a compiled time answers quickly wherever 'now' is */
    for (int i = 0; i < 4; i++) {
        int r = sip_cpl_time_match(t, now);
        if (r != 0 && r != 1)
            __builtin_trap();
        now += apr_time_from_sec(3601 * (i + 1) * 97);
    }
    return fuzz_done();
}
