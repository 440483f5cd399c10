#!/usr/bin/perl
# tools/sip-script, the command-line client for scripts kept in REGISTER
# (draft-lennox-sip-reg-payload-01): its arguments; the REGISTERs it builds
# and its digest answers, checked byte by byte against a registrar played
# by this test on raw UDP and TCP sockets (retransmission, 412, a multipart
# answer, a silent server); then end to end against httpd with
# SipScriptUpload On and SipAuth (upload, fetch, replace, remove, wrong
# password, --safe and 412) over UDP and TCP.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use File::Temp qw(tempdir);
use Digest::MD5 qw(md5_hex);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token);
use SipRegTest;
use SipDigest qw(digest_server);

my $TOOL = SipTest::repo() . '/tools/sip-script';
ok(-x $TOOL, 'tools/sip-script is executable') or BAIL_OUT('no tool');
my $tmp = tempdir('sip_script_t_XXXXXX', TMPDIR => 1, CLEANUP => 1);

# ---- running the tool

my %kids;
END { kill 'KILL', keys %kids if %kids }

# Starts sip-script with @args; returns a handle for finish().
sub start_tool {
    my (@args) = @_;
    my $n = rand_token(6);
    my ($out, $err) = ("$tmp/out.$n", "$tmp/err.$n");
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $out);
        open(STDERR, '>', $err);
        exec($^X, $TOOL, @args) or POSIX::_exit(127);
    }
    $kids{$pid} = 1;
    return { pid => $pid, out => $out, err => $err };
}

# Waits for it (at most $limit s); returns (exit status, stdout, stderr).
sub finish {
    my ($h, $limit) = @_;
    my $end = time + ($limit // 30);
    my $st;
    while (time < $end) {
        last if waitpid($h->{pid}, WNOHANG) == $h->{pid} && defined($st = $?);
        sleep 0.05;
    }
    unless (defined $st) { kill 'KILL', $h->{pid}; waitpid($h->{pid}, 0); $st = -1 }
    delete $kids{$h->{pid}};
    my $slurp = sub { open(my $f, '<:raw', $_[0]) or return ''; local $/; my $s = <$f> // ''; $s };
    return (($st == -1 ? -1 : $st >> 8), $slurp->($h->{out}), $slurp->($h->{err}));
}

sub run_tool { my ($limit, @a) = @_; return finish(start_tool(@a), $limit) }

sub write_file {
    my ($path, $text) = @_;
    open(my $f, '>:raw', $path) or die "$path: $!";
    print $f $text;
    close $f;
    return $path;
}

my $CPL = qq{<?xml version="1.0" encoding="UTF-8"?>\n<cpl xmlns="urn:ietf:params:xml:ns:cpl">\n}
        . qq{  <incoming><location url="sip:alice\@127.0.0.1:5999"><redirect/></location></incoming>\n</cpl>\n};
my $CPL2 = $CPL =~ s/redirect/proxy/r;
my $PERL = "#!/usr/bin/perl\n# a filter\nprint \"SIP/2.0 486 Busy Here\\n\\n\";\n";
my $cplf = write_file("$tmp/forward.cpl", $CPL);
my $plf = write_file("$tmp/filter.pl", $PERL);

# ================================================================ arguments

{
    my ($rc, $out, $err) = run_tool(10, '--help');
    is($rc, 0, '--help exits 0');
    like($out, qr/upload.*FILE/s, '--help documents upload FILE');
    like($out, qr/\bfetch\b/, '--help documents fetch');
    like($out, qr/remove.*TYPE/s, '--help documents remove TYPE');
    like($out, qr/--safe.*--if-unmodified-since|--if-unmodified-since.*--safe/s, '--help documents --safe and --if-unmodified-since');
    like($out, qr/EXIT STATUS/, '--help documents the exit status');
    ($rc, $out) = run_tool(10, '--version');
    is($rc, 0, '--version exits 0');
    like($out, qr/^sip-script \d/, '--version prints the version');

    my @bad = (
        [ [], qr/no command/, 'no command' ],
        [ [ 'frobnicate' ], qr/unknown command/, 'unknown command' ],
        [ [ 'fetch' ], qr/--aor/, 'no --aor' ],
        [ [ '--aor', 'alice@example.org', 'fetch' ], qr/not sip:user\@domain/, 'an AoR without sip:' ],
        [ [ '--aor', 'sip:a@b', 'upload' ], qr/takes 1 argument/, 'upload without a file' ],
        [ [ '--aor', 'sip:a@b', 'upload', "$tmp/nonexistent.cpl" ], qr/nonexistent\.cpl/, 'upload of a missing file' ],
        [ [ '--aor', 'sip:a@b', 'remove', 'perl' ], qr/unknown script type/, 'remove of an unknown type' ],
        [ [ '--aor', 'sip:a@b', '--safe', 'fetch' ], qr/for upload/, '--safe with fetch' ],
        [ [ '--aor', 'sip:a@b', '--safe', '--if-unmodified-since', 'x', 'upload', $cplf ], qr/exclude/, '--safe with --if-unmodified-since' ],
        [ [ '--aor', 'sip:a@b', '--server', 'h:99999', 'fetch' ], qr/out of range/, 'a port out of range' ],
        [ [ '--aor', 'sip:a@b', '--server', 'a:b:c', 'fetch' ], qr/not host\[:port\]/, 'a bad --server' ],
        [ [ '--aor', 'sip:a@b', '--bogus', 'fetch' ], qr/bad options/, 'an unknown option' ],
        [ [ '--aor', 'sip:a@b', '--content-type', 'perl', 'upload', $plf ], qr/not type\/subtype/, 'a bad --content-type' ],
        [ [ '--aor', "sip:a\@b\r\nVia: x", 'fetch' ], qr/control character/, 'CR LF in --aor (header injection)' ],
        [ [ '--aor', 'sip:a@b', '--if-unmodified-since', "x\r\nContact: *", 'upload', $cplf ], qr/control character/,
          'CR LF in --if-unmodified-since' ],
        [ [ '--aor', 'sip:a@b', '--user', 'a"b', '--password', 'x', 'fetch' ], qr/double quote/, 'a quote in --user' ],
        [ [ '--aor', 'sip:a@b', '--qop', 'auth-conf', 'fetch' ], qr/--qop must be/, 'an unknown --qop' ],
    );
    for my $b (@bad) {
        my ($rc2, undef, $err2) = run_tool(10, @{ $b->[0] });
        is($rc2, 2, "$b->[2]: exit status 2");
        like($err2, $b->[1], "$b->[2]: says why");
    }
}

# ================================================================ a registrar played by the test

my $REALM = 'fake.test';
my %FAKE_PW = (alice => 'secret');

# One request from $sock (UDP: [msg, peer]; TCP: the accepted connection).
sub fake_recv {
    my ($f, $limit) = @_;
    my $end = time + ($limit // 10);
    if ($f->{udp}) {
        my $sel = IO::Select->new($f->{udp});
        return undef unless $sel->can_read($end - time);
        my $peer = $f->{udp}->recv(my $buf, 65535);
        $f->{peer} = $peer;
        return $buf;
    }
    unless ($f->{conn}) {
        my $sel = IO::Select->new($f->{listen});
        return undef unless $sel->can_read($end - time);
        $f->{conn} = $f->{listen}->accept;
        $f->{buf} = '';
    }
    my $sel = IO::Select->new($f->{conn});
    while (time < $end) {
        if ($f->{buf} =~ /\r\n\r\n/) {
            my $hlen = $+[0];
            my ($cl) = substr($f->{buf}, 0, $hlen) =~ /^Content-Length:\s*(\d+)/mi;
            return substr($f->{buf}, 0, $hlen + $cl, '') if defined $cl && length $f->{buf} >= $hlen + $cl;
        }
        next unless $sel->can_read(0.2);
        my $n = sysread($f->{conn}, my $buf, 65536);
        return undef unless $n;
        $f->{buf} .= $buf;
    }
    return undef;
}

sub fake_send {
    my ($f, $text) = @_;
    if ($f->{udp}) { $f->{udp}->send($text, 0, $f->{peer}) }
    else           { syswrite($f->{conn}, $text) }
}

# A response to request $q: its Via, From, To, Call-ID and CSeq copied.
sub answer {
    my ($q, $status, %o) = @_;
    my @h = map { "$_: " . $q->header($_) } grep { defined $q->header($_) } qw(via from to call-id cseq);
    $h[2] .= ';tag=reg1' if $h[2] =~ /^to:/i;
    push @h, @{ $o{headers} || [] };
    my $body = $o{body} // '';
    push @h, 'Content-Length: ' . length $body;
    return "SIP/2.0 $status\r\n" . join('', map { "$_\r\n" } @h) . "\r\n" . $body;
}

sub challenge_401 {
    my ($q, $nonce) = @_;
    return answer($q, '401 Unauthorized',
                  headers => [ qq{WWW-Authenticate: Digest realm="$REALM", nonce="$nonce", qop="auth", algorithm=MD5, opaque="op1"} ]);
}

# The Authorization value of $q, parsed; and whether its response is right.
sub check_digest {
    my ($q, $nonce, $what) = @_;
    my $v = $q->header('authorization') // '';
    my %a;
    $a{lc $1} = defined $2 ? $2 : $3 while $v =~ /(\w+)=(?:"([^"]*)"|([^,\s]+))/g;
    my ($ruri) = $q->start_line =~ /^REGISTER (\S+) SIP\/2\.0$/;
    ok($v =~ /^Digest / && $a{username} eq 'alice' && $a{realm} eq $REALM && $a{nonce} eq $nonce
       && $a{uri} eq $ruri && $a{qop} eq 'auth' && $a{nc} =~ /^[0-9a-f]{8}$/ && length($a{cnonce} // '') >= 8
       && ($a{opaque} // '') eq 'op1' && ($a{algorithm} // '') eq 'MD5',
       "$what: Authorization has username, realm, nonce, uri = Request-URI, qop=auth, nc, cnonce, opaque")
        or diag("Authorization: $v");
    my $ha1 = md5_hex("alice:$REALM:$FAKE_PW{alice}");
    my $ha2 = md5_hex("REGISTER:$a{uri}");
    is($a{response}, md5_hex("$ha1:$nonce:$a{nc}:$a{cnonce}:auth:$ha2"), "$what: the digest response is right");
    return \%a;
}

sub new_fake {
    my ($tr) = @_;
    if ($tr eq 'udp') {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp') or die "udp: $!";
        return { udp => $s, port => $s->sockport, tr => 'udp' };
    }
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1,
                                  Proto => 'tcp') or die "tcp: $!";
    return { listen => $l, port => $l->sockport, tr => 'tcp' };
}

for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    my $f = new_fake($tr);
    my @common = ('--server', "127.0.0.1:$f->{port}", "--$tr", '--aor', 'sip:alice@fake.test',
                  '--user', 'alice', '--timeout', 5);
    my $outdir = "$tmp/fetch-$tr";
    mkdir $outdir;

    # ---- fetch: 401, the digest answer, a multipart 200 with two scripts
    my $h = start_tool(@common, '--password', $FAKE_PW{alice}, 'fetch', '--output', $outdir);
    my $raw = fake_recv($f);
    ok($raw, "$T fetch: a REGISTER arrives") or next;
    my $q1 = parse_msg($raw);
    like($q1->start_line, qr/^REGISTER sip:fake\.test SIP\/2\.0$/, "$T fetch: Request-URI is the AoR's domain");
    my $via = $q1->header('via') // '';
    like($via, qr/^SIP\/2\.0\/$T 127\.0\.0\.1:\d+;branch=z9hG4bK[0-9a-f]+/, "$T fetch: Via with our transport and a z9hG4bK branch");
    is($q1->header('max-forwards'), '70', "$T fetch: Max-Forwards 70");
    like($q1->header('from') // '', qr/^<sip:alice\@fake\.test>;tag=\w+$/, "$T fetch: From is the AoR, with a tag");
    is($q1->header('to'), '<sip:alice@fake.test>', "$T fetch: To is the AoR, no tag");
    like($q1->header('cseq') // '', qr/^\d+ REGISTER$/, "$T fetch: CSeq n REGISTER");
    ok($q1->header('call-id'), "$T fetch: Call-ID");
    ok(!defined $q1->header('contact'), "$T fetch: no Contact (a query: no binding touched)");
    is($q1->header('content-length'), '0', "$T fetch: Content-Length: 0");
    ok(!defined $q1->header('content-disposition'), "$T fetch: no Content-Disposition");
    like($q1->header('accept') // '', qr{application/cpl\+xml.*application/x-perl.*multipart/mixed.*text/plain},
         "$T fetch: Accept lists the script types, multipart/mixed and text/plain");
    is($q1->header('accept-disposition'), 'script, sip-cgi', "$T fetch: Accept-Disposition: script, sip-cgi");
    ok(!defined $q1->header('authorization'), "$T fetch: no credentials before a challenge");
    fake_send($f, challenge_401($q1, 'n1'));

    my $q2 = parse_msg(fake_recv($f) // '');
    ok($q2->start_line, "$T fetch: the REGISTER again after 401") or next;
    my ($c1) = $q1->header('cseq') =~ /^(\d+)/;
    is($q2->header('cseq'), ($c1 + 1) . ' REGISTER', "$T fetch: CSeq incremented on the retry");
    is($q2->header('call-id'), $q1->header('call-id'), "$T fetch: same Call-ID");
    is($q2->header('from'), $q1->header('from'), "$T fetch: same From tag");
    my ($b1) = $via =~ /branch=([^;]+)/;
    my ($b2) = ($q2->header('via') // '') =~ /branch=([^;]+)/;
    ok($b2 && $b2 ne $b1 && $b2 =~ /^z9hG4bK/, "$T fetch: a new branch for the new transaction");
    my $a = check_digest($q2, 'n1', "$T fetch");
    is($a->{nc}, '00000001', "$T fetch: nc=00000001 for a new nonce");

    my $date1 = 'Sat, 05 Dec 2026 10:00:00 GMT';
    my $date2 = 'Sun, 06 Dec 2026 01:02:03 GMT';
    my $mp = "preamble\r\n--b0und\r\nContent-Type: application/cpl+xml\r\n"
           . qq{Content-Disposition: script;modification-date="$date1"\r\n\r\n$CPL\r\n--b0und\r\n}
           . qq{Content-Type: application/x-perl\r\nContent-Disposition: sip-cgi; modification-date="$date2"\r\n\r\n}
           . "$PERL\r\n--b0und--\r\nepilogue";
    # a stray response of another transaction first: to be ignored
    fake_send($f, answer($q1, '200 OK', headers => [ 'Content-Type: text/plain' ], body => 'not for you'));
    fake_send($f, answer($q2, '200 OK', headers => [ 'Content-Type: multipart/mixed; boundary="b0und"' ], body => $mp));
    my ($rc, $out, $err) = finish($h);
    is($rc, 0, "$T fetch: exit 0") or diag($err);
    my $got = sub { open(my $x, '<:raw', $_[0]) or return undef; local $/; <$x> };
    is($got->("$outdir/script.cpl"), $CPL, "$T fetch: the CPL script written to DIR/script.cpl");
    is($got->("$outdir/sip-cgi.pl"), $PERL, "$T fetch: the SIP-CGI script written to DIR/sip-cgi.pl");
    like($err, qr/script application\/cpl\+xml \d+ bytes, modification-date: \Q$date1\E/, "$T fetch: prints the CPL script's modification-date");
    like($err, qr/sip-cgi application\/x-perl \d+ bytes, modification-date: \Q$date2\E/, "$T fetch: prints the SIP-CGI script's modification-date");

    # ---- upload: Content-Disposition, Content-Type, the body; 412 -> exit 1
    $f->{conn} = undef if $tr eq 'tcp';
    $h = start_tool(@common, '--password', $FAKE_PW{alice}, '--if-unmodified-since', $date1, 'upload', $cplf);
    $q1 = parse_msg(fake_recv($f) // '');
    ok($q1->start_line, "$T upload: a REGISTER arrives") or next;
    is($q1->header('content-disposition'), 'script;action=store', "$T upload: Content-Disposition: script;action=store");
    is($q1->header('content-type'), 'application/cpl+xml', "$T upload: Content-Type from the .cpl extension");
    is($q1->header('content-length'), length($CPL), "$T upload: Content-Length is the file's size");
    is($q1->body, $CPL, "$T upload: the body is the file, byte for byte");
    is($q1->header('if-unmodified-since'), $date1, "$T upload: If-Unmodified-Since as given");
    fake_send($f, challenge_401($q1, 'n2'));
    $q2 = parse_msg(fake_recv($f) // '');
    check_digest($q2, 'n2', "$T upload");
    is($q2->body, $CPL, "$T upload: the body again with the credentials");
    fake_send($f, answer($q2, '412 Precondition Failed', headers => [ 'Content-Type: text/plain' ],
                         body => "the stored script changed at $date2\n"));
    ($rc, $out, $err) = finish($h);
    is($rc, 1, "$T upload refused: exit 1");
    like($err, qr/SIP\/2\.0 412 Precondition Failed/, "$T upload refused: the status line is printed");
    like($err, qr/the stored script changed/, "$T upload refused: with the server's text/plain explanation");

    # ---- upload of a .pl with --type and --content-type given; wrong password -> exit 1
    $f->{conn} = undef if $tr eq 'tcp';
    $h = start_tool(@common, '--password', 'wrong', '--contact', 'sip:alice@127.0.0.1:5999', '--expires', 60,
                    'upload', $plf);
    $q1 = parse_msg(fake_recv($f) // '');
    is($q1->header('content-disposition'), 'sip-cgi;action=store', "$T upload .pl: disposition sip-cgi");
    is($q1->header('content-type'), 'application/x-perl', "$T upload .pl: Content-Type application/x-perl");
    is($q1->header('contact'), '<sip:alice@127.0.0.1:5999>', "$T upload --contact: the Contact");
    is($q1->header('expires'), '60', "$T upload --expires: the Expires");
    fake_send($f, challenge_401($q1, 'n3'));
    $q2 = parse_msg(fake_recv($f) // '');
    ok($q2->header('authorization'), "$T wrong password: credentials sent once");
    fake_send($f, challenge_401($q2, 'n4'));
    ($rc, $out, $err) = finish($h);
    is($rc, 1, "$T wrong password: exit 1 after the second 401 (no loop)");
    like($err, qr/SIP\/2\.0 401 Unauthorized/, "$T wrong password: the status line is printed");
    ok(!defined fake_recv($f, 0.5), "$T wrong password: no third REGISTER");

    # ---- remove: empty body, action=remove, empty Accept-Disposition
    $f->{conn} = undef if $tr eq 'tcp';
    $h = start_tool(@common, '--password', $FAKE_PW{alice}, 'remove', 'cpl');
    $q1 = parse_msg(fake_recv($f) // '');
    is($q1->header('content-disposition'), 'script;action=remove', "$T remove cpl: Content-Disposition: script;action=remove");
    is($q1->header('content-length'), '0', "$T remove: Content-Length: 0");
    is($q1->header('accept-disposition'), '', "$T remove: an empty Accept-Disposition (no scripts back)");
    fake_send($f, answer($q1, '200 OK'));
    ($rc, $out, $err) = finish($h);
    is($rc, 0, "$T remove: exit 0 on 200 without a challenge") or diag($err);

    # ---- fetch with nothing stored
    $f->{conn} = undef if $tr eq 'tcp';
    $h = start_tool(@common, 'fetch');
    $q1 = parse_msg(fake_recv($f) // '');
    fake_send($f, answer($q1, '200 OK'));
    ($rc, $out, $err) = finish($h);
    is($rc, 0, "$T fetch of nothing: exit 0");
    like($err, qr/no script stored/, "$T fetch of nothing: says so");
    is($out, '', "$T fetch of nothing: nothing on stdout");
}

# ---- qop=auth-int when offered: the digest covers the body (RFC 2617 §3.2.2.3)
for my $forced (undef, 'auth') {
    my $f = new_fake('udp');
    my $what = defined $forced ? '--qop auth' : 'auth-int offered';
    my $h = start_tool('--server', "127.0.0.1:$f->{port}", '--udp', '--aor', 'sip:alice@fake.test',
                       '--password', $FAKE_PW{alice}, (defined $forced ? ('--qop', $forced) : ()),
                       'upload', $cplf);
    my $q1 = parse_msg(fake_recv($f) // '');
    fake_send($f, answer($q1, '401 Unauthorized', headers => [
        qq{WWW-Authenticate: Digest realm="$REALM", nonce="ni", qop="auth,auth-int", algorithm=MD5} ]));
    my $q2 = parse_msg(fake_recv($f) // '');
    my $v = $q2->header('authorization') // '';
    my %a;
    $a{lc $1} = defined $2 ? $2 : $3 while $v =~ /(\w+)=(?:"([^"]*)"|([^,\s]+))/g;
    my $qop = $forced // 'auth-int';
    is($a{qop}, $qop, "$what: qop=$qop chosen");
    my $ha1 = md5_hex("alice:$REALM:$FAKE_PW{alice}");
    my $ha2 = md5_hex("REGISTER:$a{uri}" . ($qop eq 'auth-int' ? ':' . md5_hex($q2->body) : ''));
    is($a{response}, md5_hex("$ha1:ni:$a{nc}:$a{cnonce}:$qop:$ha2"),
       "$what: the digest response is right" . ($qop eq 'auth-int' ? ' (H(entity-body) included)' : ''));
    fake_send($f, answer($q2, '200 OK'));
    my ($rc, undef, $err) = finish($h);
    is($rc, 0, "$what: exit 0") or diag($err);
}
{
    my $f = new_fake('udp');
    my $h = start_tool('--server', "127.0.0.1:$f->{port}", '--udp', '--aor', 'sip:alice@fake.test',
                       '--password', $FAKE_PW{alice}, '--qop', 'auth', 'fetch');
    my $q1 = parse_msg(fake_recv($f) // '');
    fake_send($f, answer($q1, '401 Unauthorized', headers => [
        qq{WWW-Authenticate: Digest realm="$REALM", nonce="nj", qop="auth-int"} ]));
    my ($rc, undef, $err) = finish($h);
    is($rc, 1, '--qop auth against a server offering only auth-int: exit 1');
    like($err, qr/challenge is not one we can answer.*here only auth/, '... and says why');
    ok(!defined fake_recv($f, 0.5), '... without sending credentials');
}

# ---- UDP: retransmission (timer E) and a silent server
{
    my $f = new_fake('udp');
    my @common = ('--server', "127.0.0.1:$f->{port}", '--udp', '--aor', 'sip:alice@fake.test');
    my $h = start_tool(@common, '--timeout', 5, '--type', 'cpl', 'fetch', '--output', "$tmp/one.cpl");
    my $first = fake_recv($f);
    my $t0 = time;
    my $again = fake_recv($f);
    my $gap = time - $t0;
    is($again, $first, 'UDP: the same REGISTER retransmitted (same branch and CSeq)');
    ok($gap > 0.3 && $gap < 1.5, sprintf('UDP: first retransmission after ~500 ms (%.2f s)', $gap));
    my $q = parse_msg($again);
    is($q->header('accept-disposition'), 'script', 'fetch --type cpl: Accept-Disposition: script');
    fake_send($f, answer($q, '200 OK', headers => [ 'Content-Type: application/cpl+xml',
                                                   'Content-Disposition: script;modification-date="Sat, 05 Dec 2026 10:00:00 GMT"' ],
                         body => $CPL));
    my ($rc, $out, $err) = finish($h);
    is($rc, 0, 'UDP fetch after a retransmission: exit 0');
    open(my $x, '<:raw', "$tmp/one.cpl");
    is(do { local $/; <$x> }, $CPL, 'a single-part answer written to the --output file');

    my $t1 = time;
    ($rc, $out, $err) = run_tool(20, @common, '--timeout', 2, 'fetch');
    is($rc, 3, 'no answer: exit status 3');
    like($err, qr/no answer from 127\.0\.0\.1:\d+ within 2 s/, 'no answer: says so');
    ok(time - $t1 < 6, 'no answer: gives up after --timeout');
    my $n = 0;
    $n++ while fake_recv($f, 0.2);
    ok($n >= 3, "no answer: retransmitted meanwhile ($n datagrams)");
}

# ---- IPv6: --server [::1]:port, Via with the bracketed address
{
    require IO::Socket::IP;
    my $s6 = IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0, Proto => 'udp');
    ok($s6, 'a UDP socket on ::1 for the IPv6 case') or diag("::1: $@");
    SKIP: {
        skip 'no ::1 (failed above)', 4 unless $s6;
        my $f = { udp => $s6, port => $s6->sockport, tr => 'udp' };
        my $h = start_tool('--server', "[::1]:$f->{port}", '--udp', '--aor', 'sip:alice@fake.test', 'fetch');
        my $q = parse_msg(fake_recv($f) // '');
        like($q->header('via') // '', qr/^SIP\/2\.0\/UDP \[::1\]:\d+;branch=z9hG4bK/, 'IPv6: Via sent-by is [::1]:port');
        like($q->header('call-id') // '', qr/\@\[::1\]$/, 'IPv6: Call-ID names the bracketed address');
        fake_send($f, answer($q, '200 OK'));
        my ($rc, undef, $err) = finish($h);
        is($rc, 0, 'IPv6: exit 0') or diag($err);
        like($err, qr/no script stored/, 'IPv6: the answer read');
    }
}

# ---- TCP: nobody listening
{
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1);
    my $port = $l->sockport;
    close $l;
    my ($rc, undef, $err) = run_tool(20, '--server', "127.0.0.1:$port", '--aor', 'sip:a@b', 'fetch');
    is($rc, 3, 'TCP connection refused: exit status 3');
    like($err, qr/cannot reach 127\.0\.0\.1:$port over TCP/, 'TCP connection refused: says so');
}

# ================================================================ end to end: httpd, SipScriptUpload, SipAuth

my $realm = 'sip.test';
my %pw = (alice => 'wonderland', bob => 'builder');
my $t = SipRegTest->new(digest_server(
    realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/var/scripts' ],
    vhost_conf => 'SipScriptUpload On',
));
my $port = $t->sip_port;
my $aor = "sip:alice\@127.0.0.1:$port";


for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    my @c = ('--server', "127.0.0.1:$port", "--$tr", '--aor', $aor, '--user', 'alice', '--timeout', 5);
    local $ENV{SIP_SCRIPT_PASSWORD} = $pw{alice};
    my $dir = "$tmp/e2e-$tr";
    mkdir $dir;
    my $read = sub { open(my $x, '<:raw', $_[0]) or return undef; local $/; <$x> };

    # wrong password: refused, nothing stored
    my ($rc, $out, $err) = run_tool(30, @c, '--password', 'nope', 'upload', $cplf);
    is($rc, 1, "$T e2e wrong password: exit 1");
    like($err, qr/SIP\/2\.0 401 /, "$T e2e wrong password: 401 printed");

    # fetch with nothing stored: 200 after the digest exchange
    ($rc, $out, $err) = run_tool(30, @c, 'fetch', '--output', $dir);
    is($rc, 0, "$T e2e fetch with nothing stored: exit 0") or diag($err);
    like($err, qr/no script stored/, "$T e2e fetch with nothing stored: says so");

    # upload, fetch back
    ($rc, $out, $err) = run_tool(30, @c, 'upload', $cplf);
    is($rc, 0, "$T e2e upload CPL: exit 0") or diag($err);
    ($rc, $out, $err) = run_tool(30, @c, 'fetch', '--output', $dir);
    is($rc, 0, "$T e2e fetch: exit 0") or diag($err);
    is($read->("$dir/script.cpl"), $CPL, "$T e2e fetch: the CPL script comes back byte for byte");
    my ($date) = $err =~ /^script \S+ \d+ bytes, modification-date: (.+?) ->/m;
    like($date // '', qr/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/, "$T e2e fetch: a modification-date (SIP date)");

    # an invalid CPL script: 400 with the reason, the stored one kept
    my $bad = write_file("$tmp/bad-$tr.cpl", $CPL =~ s/<redirect\/>/<explode\/>/r);
    ($rc, $out, $err) = run_tool(30, @c, 'upload', $bad);
    is($rc, 1, "$T e2e invalid CPL: exit 1");
    like($err, qr/SIP\/2\.0 400 /, "$T e2e invalid CPL: 400 printed");
    like($err, qr/explode/, "$T e2e invalid CPL: the text\/plain reason (the unknown element) printed");

    # replace (--safe: fetches the date, then uploads with If-Unmodified-Since)
    my $c2 = write_file("$tmp/v2-$tr.cpl", $CPL2);
    sleep 1.1;      # SIP dates have whole seconds
    ($rc, $out, $err) = run_tool(30, @c, '--safe', 'upload', $c2);
    is($rc, 0, "$T e2e --safe upload (replace): exit 0") or diag($err);
    like($err, qr/the stored script script was modified \Q$date\E/, "$T e2e --safe: found the stored date first")
        if defined $date;
    ($rc, $out, $err) = run_tool(30, @c, '--type', 'cpl', 'fetch');
    is($out, $CPL2, "$T e2e replace: fetch to stdout gives the new script");

    # the old date now: 412, the new script kept
    ($rc, $out, $err) = run_tool(30, @c, '--if-unmodified-since', $date // 'Sat, 01 Jan 2000 00:00:00 GMT',
                                 'upload', $cplf);
    is($rc, 1, "$T e2e stale If-Unmodified-Since: exit 1");
    like($err, qr/SIP\/2\.0 412 /, "$T e2e stale If-Unmodified-Since: 412 printed");
    ($rc, $out) = run_tool(30, @c, '--type', 'cpl', 'fetch');
    is($out, $CPL2, "$T e2e after 412: the stored script is unchanged");

    # a SIP-CGI script (needs SipUploadUser: without one the server refuses it, 415)
    ($rc, $out, $err) = run_tool(30, @c, 'upload', $plf);
    is($rc, 1, "$T e2e sip-cgi upload without SipUploadUser: refused");
    like($err, qr/SIP\/2\.0 415 /, "$T e2e sip-cgi upload without SipUploadUser: 415 printed");

    # bob may not touch alice's scripts
    ($rc, $out, $err) = run_tool(30, @c, '--user', 'bob', '--password', $pw{bob}, 'remove', 'cpl');
    is($rc, 1, "$T e2e another user's remove: refused");
    like($err, qr/SIP\/2\.0 403 /, "$T e2e another user's remove: 403 printed");

    # remove, then nothing comes back; removing again still succeeds
    ($rc, $out, $err) = run_tool(30, @c, 'remove', 'cpl');
    is($rc, 0, "$T e2e remove: exit 0") or diag($err);
    ($rc, $out, $err) = run_tool(30, @c, 'fetch');
    like($err, qr/no script stored/, "$T e2e after remove: no script stored");
    ($rc, $out, $err) = run_tool(30, @c, 'remove', 'cpl');
    is($rc, 0, "$T e2e remove of nothing: exit 0") or diag($err);
}

$t->stop;

# ---- both kinds of script: a SIP-CGI upload needs SipUploadUser; fetch
# then gets a multipart/mixed answer, written as two files
my $t2 = SipRegTest->new(digest_server(
    realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/var/scripts', 'SipUploadUser nobody',
              'SipUploadWorkDir @DIR@/var/work', 'SipUploadInterpreters /usr/bin/perl' ],
    vhost_conf => 'SipScriptUpload On',
));
$port = $t2->sip_port;
$aor = "sip:alice\@127.0.0.1:$port";
for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    my @c = ('--server', "127.0.0.1:$port", "--$tr", '--aor', $aor, '--user', 'alice', '--timeout', 5);
    local $ENV{SIP_SCRIPT_PASSWORD} = $pw{alice};
    my $dir = "$tmp/both-$tr";
    mkdir $dir;
    my $read = sub { open(my $x, '<:raw', $_[0]) or return undef; local $/; <$x> };
    my ($rc, $out, $err) = run_tool(30, @c, 'upload', $plf);
    is($rc, 0, "$T e2e sip-cgi upload (.pl): exit 0") or diag($err);
    ($rc, $out, $err) = run_tool(30, @c, 'upload', $cplf);
    is($rc, 0, "$T e2e CPL upload beside it: exit 0") or diag($err);
    ($rc, $out, $err) = run_tool(30, @c, 'fetch', '--output', $dir);
    is($rc, 0, "$T e2e fetch of both: exit 0") or diag($err);
    is($read->("$dir/sip-cgi.pl"), $PERL, "$T e2e fetch of both: sip-cgi.pl byte for byte");
    is($read->("$dir/script.cpl"), $CPL, "$T e2e fetch of both: script.cpl byte for byte");
    like($err, qr/^sip-cgi application\/x-perl \d+ bytes, modification-date: \w{3}, /m,
         "$T e2e fetch of both: the SIP-CGI script's modification-date printed");
    ($rc, $out, $err) = run_tool(30, @c, '--type', 'sip-cgi', 'fetch');
    is($out, $PERL, "$T e2e fetch --type sip-cgi: only that script, to stdout");
    ($rc, $out, $err) = run_tool(30, @c, 'remove', 'sip-cgi');
    is($rc, 0, "$T e2e remove sip-cgi: exit 0") or diag($err);
    unlink "$dir/script.cpl", "$dir/sip-cgi.pl";
    ($rc, $out, $err) = run_tool(30, @c, 'fetch', '--output', $dir);
    ok(-f "$dir/script.cpl" && !-e "$dir/sip-cgi.pl", "$T e2e after remove sip-cgi: only the CPL script comes back");
    ($rc, $out, $err) = run_tool(30, @c, 'remove', 'script');
    is($rc, 0, "$T e2e remove script: exit 0") or diag($err);
}
$t2->stop;

# ---- SipScriptUploadIntegrity On: script changes need a digest over the
# body (qop=auth-int), which sip-script gives by default
my $t3 = SipRegTest->new(digest_server(
    realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/var/scripts' ],
    vhost_conf => "SipScriptUpload On\nSipScriptUploadIntegrity On",
));
$port = $t3->sip_port;
$aor = "sip:alice\@127.0.0.1:$port";
for my $tr (qw(udp tcp)) {
    my $T = uc $tr;
    my @c = ('--server', "127.0.0.1:$port", "--$tr", '--aor', $aor, '--user', 'alice', '--timeout', 5);
    local $ENV{SIP_SCRIPT_PASSWORD} = $pw{alice};
    my ($rc, $out, $err) = run_tool(30, @c, '--qop', 'auth', 'upload', $cplf);
    is($rc, 1, "$T e2e integrity: an upload with qop=auth is refused");
    like($err, qr/SIP\/2\.0 401 /, "$T e2e integrity: 401 printed");
    ($rc, $out, $err) = run_tool(30, @c, 'upload', $cplf);
    is($rc, 0, "$T e2e integrity: the same upload with qop=auth-int (the default) is stored") or diag($err);
    ($rc, $out, $err) = run_tool(30, @c, '--type', 'cpl', 'fetch');
    is($out, $CPL, "$T e2e integrity: and comes back");
    ($rc, $out, $err) = run_tool(30, @c, 'remove', 'cpl');
    is($rc, 0, "$T e2e integrity: remove with qop=auth-int") or diag($err);
}
$t3->stop;
done_testing();
