/* Running a forwarding file's "|program" as the file's owner (issue 15
 * item 4; docs/routing.md "Forwarding files", docs/security.md): the
 * checks, modelled on Apache's suexec, that both the engine (before it
 * commits to the program, so that a refusal is a log line and the call
 * goes on as if the file named none) and the setuid helper sip-suexec
 * (the authority: it runs as root, the engine is only httpd) apply.
 *
 * Plain libc, no APR: tools/sip-suexec.c includes this too.  Every check
 * returns NULL when it passes, else why not (a static string). */
#ifndef SIP_FWD_OWNER_H
#define SIP_FWD_OWNER_H

#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* SipForwardMinUid's default; sip-suexec is built with its own floor
 * (make SIP_FORWARD_MIN_UID=...) and takes the higher of the two. */
#define SIP_FWD_OWNER_MIN_UID 1000
/* the largest forwarding file read */
#define SIP_FWD_OWNER_MAX_SIZE 65536
/* the most words a "|program" line may have, program included */
#define SIP_FWD_OWNER_MAX_ARGS 32

/* The account the program would run as: never root (uid or group), never
 * below the minimum (system accounts). */
static inline const char *sip_fwd_owner_uid_check(uid_t uid, gid_t gid, long min_uid)
{
    if (uid == 0 || gid == 0)
        return "it would run as root";
    if (min_uid < 1 || (long)uid < min_uid)
        return "the owner's uid is below the minimum (SipForwardMinUid)";
    return NULL;
}

/* An absolute path without "//", "." or ".." components, control
 * characters or a trailing '/': what it names is what was checked. */
static inline int sip_fwd_owner_path_clean(const char *p)
{
    size_t n = strlen(p);
    const char *c;

    if (p[0] != '/' || n < 2 || n >= PATH_MAX || p[n - 1] == '/')
        return 0;
    for (c = p; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return 0;
        if (c[0] == '/' && (c[1] == '/'
                            || (c[1] == '.' && (c[2] == '/' || !c[2]))
                            || (c[1] == '.' && c[2] == '.' && (c[3] == '/' || !c[3]))))
            return 0;
    }
    return 1;
}

/* The forwarding file (lstat, then fstat of what was opened): a regular
 * file of the owner that nobody else may write. */
static inline const char *sip_fwd_owner_file_check(const struct stat *st, uid_t uid)
{
    if (S_ISLNK(st->st_mode))
        return "the forwarding file is a symbolic link";
    if (!S_ISREG(st->st_mode))
        return "the forwarding file is not a regular file";
    if (st->st_uid != uid)
        return "the forwarding file is not the owner's";
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return "the forwarding file is writable by group or others";
    return NULL;
}

/* A directory on the way (the file's, the program's): root's or the
 * owner's, writable by nobody else (a sticky bit does not make /tmp safe:
 * anyone may put a file there). */
static inline const char *sip_fwd_owner_dir_check(const struct stat *st, uid_t uid)
{
    if (!S_ISDIR(st->st_mode))
        return "a directory on the way is not a directory";
    if (st->st_uid != 0 && st->st_uid != uid)
        return "a directory on the way belongs to someone else";
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return "a directory on the way is writable by group or others";
    return NULL;
}

/* The program (lstat): as suexec, no symbolic link, a regular file the
 * owner (or root) owns and may execute, that nobody else may write, and
 * not setuid or setgid. */
static inline const char *sip_fwd_owner_program_check(const struct stat *st, uid_t uid)
{
    if (S_ISLNK(st->st_mode))
        return "the program is a symbolic link";
    if (!S_ISREG(st->st_mode))
        return "the program is not a regular file";
    if (st->st_uid != uid && st->st_uid != 0)
        return "the program belongs to someone else than the file's owner (or root)";
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return "the program is writable by group or others";
    if (st->st_mode & (S_ISUID | S_ISGID))
        return "the program is setuid or setgid";
    if (!(st->st_mode & S_IXUSR))
        return "the program is not executable";
    return NULL;
}

/* The file SipForwardFile 'tmpl' gives the user 'name' whose home is
 * 'home', into out[size]: "~/x" is home/x, else %u is the name and %% a
 * '%'.  0 when it does not fit or the template is not one
 * SipForwardFile takes. */
static inline int sip_fwd_owner_expand(char *out, size_t size, const char *tmpl,
                                       const char *name, const char *home)
{
    size_t n = 0, k;
    const char *t, *add;

    if (!size)
        return 0;
    if (tmpl[0] == '~' && tmpl[1] == '/') {
        if (!home || home[0] != '/')
            return 0;
        k = strlen(home) + strlen(tmpl + 1);
        if (k >= size)
            return 0;
        strcpy(out, home);
        strcat(out, tmpl + 1);
        return 1;
    }
    if (tmpl[0] != '/' || !strstr(tmpl, "%u"))
        return 0;
    for (t = tmpl; *t; t++) {
        char one[2] = {*t, '\0'};
        add = one;
        if (t[0] == '%' && t[1] == 'u') {
            add = name;
            t++;
        }
        else if (t[0] == '%' && t[1] == '%')
            t++;
        k = strlen(add);
        if (n + k >= size)
            return 0;
        memcpy(out + n, add, k);
        n += k;
    }
    out[n] = '\0';
    return 1;
}

/* The directory part of a %u template that is the same for every user
 * (everything before the last '/' that comes before the first '%'):
 * "/etc/mod_sip/forward/%u" gives "/etc/mod_sip/forward".  0 for a "~/"
 * template, or when it does not fit. */
static inline int sip_fwd_owner_template_dir(char *out, size_t size, const char *tmpl)
{
    const char *pct = strchr(tmpl, '%'), *slash = NULL, *t;

    if (tmpl[0] != '/' || !pct)
        return 0;
    for (t = tmpl; t < pct; t++)
        if (*t == '/')
            slash = t;
    if (!slash || (size_t)(slash - tmpl) + 2 > size)
        return 0;
    if (slash == tmpl) {
        strcpy(out, "/");
        return 1;
    }
    memcpy(out, tmpl, (size_t)(slash - tmpl));
    out[slash - tmpl] = '\0';
    return 1;
}

/* The "|program args" of a forwarding file's text (NUL-ended, changed in
 * place), by sip_forward_parse's rules: '#' starts a comment, the program
 * line is the only entry, words are split at blanks, the program is an
 * absolute path.  The number of words with argv[] filled and NULL-ended
 * (argv has room for SIP_FWD_OWNER_MAX_ARGS + 1), or 0 with *why. */
static inline int sip_fwd_owner_program_line(char *text, char **argv, const char **why)
{
    char *line, *next, *prog = NULL, *w;
    int argc = 0;

    for (line = text; line; line = next) {
        char *hash;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if ((hash = strchr(line, '#')))
            *hash = '\0';
        line += strspn(line, " \t");
        if (*line == '|') {
            if (prog) {
                *why = "more than one |program line";
                return 0;
            }
            prog = line + 1;
        }
        else if (line[strspn(line, " \t\r,")]) {
            *why = "a |program line must be the only entry";
            return 0;
        }
    }
    for (w = prog; w && *w;) {
        w += strspn(w, " \t\r");
        if (!*w)
            break;
        if (argc == SIP_FWD_OWNER_MAX_ARGS) {
            *why = "too many words on the |program line";
            return 0;
        }
        argv[argc++] = w;
        w += strcspn(w, " \t\r");
        if (*w)
            *w++ = '\0';
    }
    argv[argc] = NULL;
    if (!argc) {
        *why = prog ? "|program needs an absolute path" : "no |program line";
        return 0;
    }
    if (argv[0][0] != '/') {
        *why = "|program needs an absolute path";
        return 0;
    }
    return argc;
}

/* What of the engine's environment reaches the program: the SIP-CGI
 * variables (RFC 3050 §5.5: the fixed names and SIP_<header>), nothing
 * the C library, a shell or an interpreter would act on (PATH, HOME and
 * the like are set by the helper itself). */
static inline int sip_fwd_owner_env_ok(const char *entry)
{
    static const char *const names[] = {
        "GATEWAY_INTERFACE", "SERVER_SOFTWARE", "SERVER_NAME", "SERVER_PORT",
        "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_HOST", "REQUEST_METHOD", "REQUEST_URI",
        "RESPONSE_STATUS", "RESPONSE_REASON", "RESPONSE_TOKEN", "REQUEST_TOKEN",
        "SCRIPT_COOKIE", "AUTH_TYPE", "REMOTE_USER", "REGISTRATIONS", "CONTENT_LENGTH",
        "CONTENT_TYPE", NULL};
    const char *eq = strchr(entry, '='), *c;
    size_t n;
    int i;

    if (!eq || eq == entry)
        return 0;
    n = (size_t)(eq - entry);
    for (c = entry; c < eq; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return 0;
    if (n > 4 && !strncmp(entry, "SIP_", 4))
        return 1;
    for (i = 0; names[i]; i++)
        if (strlen(names[i]) == n && !strncmp(entry, names[i], n))
            return 1;
    return 0;
}

#endif
