/* Name mapping (sip_namemap.c): a SipNameMap file (the input), every form
 * of every person in it found again, the candidates of an answer line,
 * and a name put into a Request-URI and read back: %-decoding what
 * sip_uri_with_user escaped gives the name again. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *s = apr_pstrmemdup(p, (const char *)data, size), *why = NULL;
    sip_namemap_t *m;
    apr_array_header_t *users;
    const char *uri, *user, *host, *back;
    char *copy, *line, *next;
    int i, j;

    if (memchr(data, '\0', size))
        return fuzz_done();     /* the file loader refuses NUL bytes */
    m = sip_namemap_parse_file(p, "fuzz", s, &why);
    if (!m && (!why || strncmp(why, "fuzz:", 5)))
        abort();
    /* every line that was taken answers to each of its forms */
    for (copy = apr_pstrdup(p, s), line = copy; m && line; line = next) {
        char *f[5], *last = NULL, *hash;
        apr_array_header_t *forms;
        int n = 0;

        if ((next = strchr(line, '\n')) != NULL)
            *next++ = '\0';
        if ((hash = strchr(line, '#')) != NULL)
            *hash = '\0';
        for (f[0] = apr_strtok(line, " \t\r", &last); f[n] && n < 4;)
            f[++n] = apr_strtok(NULL, " \t\r", &last);
        if (n < 3)
            continue;
        forms = sip_namemap_forms(p, f[0], f[1], n == 4 ? f[2] : NULL, f[n - 1]);
        for (i = 0; i < forms->nelts; i++) {
            users = sip_namemap_lookup(m, p, APR_ARRAY_IDX(forms, i, const char *), &why);
            for (j = 0; users && j < users->nelts; j++)
                if (!strcmp(APR_ARRAY_IDX(users, j, const char *), f[0]))
                    break;
            if (!users || j == users->nelts)
                abort();
        }
    }
    /* an answer line: every candidate is a user id */
    users = nm_split_users(p, s, "fuzz");
    for (i = 0; i < users->nelts; i++)
        if (!nm_user_ok(APR_ARRAY_IDX(users, i, const char *)))
            abort();
    /* a name into a URI and back (no controls: the step refuses them; no
     * ';' or '?', where sip_uri_user_host ends a user part) */
    for (i = 0; i < (int)size; i++)
        if (data[i] < ' ' || data[i] == 0x7f || data[i] == ';' || data[i] == '?')
            return fuzz_done();
    if (size && (uri = sip_uri_with_user(p, "sip:x@example.org;transport=tcp", s, 0))) {
        if (!sip_uri_user_host(p, uri, &user, &host) || strcmp(host, "example.org")
            || !(back = sip_uri_user_decoded(p, user)) || strcmp(back, s))
            abort();
    }
    return fuzz_done();
}
