#include "sip_upload.h"

#include <string.h>

#include "apr_strings.h"

/* The kernel reads at most this much of a #! line (BINPRM_BUF_SIZE). */
#define SHEBANG_MAX 255

int sip_upload_interpreter_ok(apr_pool_t *p, const char *body, apr_size_t len,
                              const apr_array_header_t *allowed, const char **interp,
                              const char **arg, const char **why)
{
    const char *nl, *s, *e;
    char *line, *prog, *rest;
    apr_size_t n;
    int i;

    *interp = *arg = NULL;
    if (len < 2 || body[0] != '#' || body[1] != '!') {
        *why = "a SIP-CGI script must start with a #! line naming its interpreter";
        return 0;
    }
    nl = memchr(body, '\n', len < SHEBANG_MAX ? len : SHEBANG_MAX);
    if (!nl) {
        *why = "the #! line is missing its end or is too long";
        return 0;
    }
    n = (apr_size_t)(nl - body - 2);
    if (n && body[2 + n - 1] == '\r')
        n--;
    line = apr_pstrmemdup(p, body + 2, n);
    if (strlen(line) != n) {
        *why = "the #! line holds a NUL byte";
        return 0;
    }
    s = line + strspn(line, " \t");
    e = s + strcspn(s, " \t");
    prog = apr_pstrmemdup(p, s, (apr_size_t)(e - s));
    rest = apr_pstrdup(p, e + strspn(e, " \t"));
    n = strlen(rest);
    while (n && (rest[n - 1] == ' ' || rest[n - 1] == '\t'))
        rest[--n] = '\0';
    for (i = 0; allowed && i < allowed->nelts; i++)
        if (!strcmp(prog, APR_ARRAY_IDX(allowed, i, const char *)))
            break;
    if (!allowed || i == allowed->nelts) {
        *why = apr_psprintf(p, "interpreter %.128s is not allowed here (SipUploadInterpreters)",
                            *prog ? prog : "(none)");
        return 0;
    }
    /* Linux passes everything after the program as one argument: keep it
     * one, without spaces, so the sandbox runs what the kernel would */
    if (strpbrk(rest, " \t")) {
        *why = "the #! line may give its interpreter at most one argument";
        return 0;
    }
    *interp = prog;
    *arg = *rest ? rest : NULL;
    return 1;
}
