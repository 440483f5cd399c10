#!/usr/bin/perl
# Call handling rules in Apache's configuration (issue 15 item 1 and 6;
# sip_rules.h): SipRule in the vhost, <Location "/user@host"> and <If>,
# SipRuleFile (the seed's compact table).  Each action on its own over UDP
# and TCP (respond 4xx, respond 3xx with URIs and with the registrar's
# bindings, respond 2xx letting the registrar answer, proxy in parallel, in
# sequence and to a domain, authenticate, script, log to a CustomLog with
# env=sip-rule-log, record); rules of one <Location> apply to its user
# only; <If> on SIP headers; the order vhost, <Location>, <If>; apache2 -t
# refusing a bad rule with its file and line; a graceful restart loading a
# changed rule while a registration survives; a table of 10 000 rules; a
# caller's header with glob characters.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port wait_until rand_token);
use SipExplodeTest;

# ports of the peers, known before the server is configured
my %P = map { $_ => free_port() } qw(u1 u2 t1 t2);

sub loc {
    my ($user, @rules) = @_;
    return ("<Location \"/$user\@127.0.0.1\">", (map { "    $_" } @rules), '</Location>');
}

my @vhost = (
    'CustomLog @DIR@/logs/rules.log "%m %{Call-ID}i %>s" env=sip-rule-log',
    'CustomLog @DIR@/logs/aol.log "%m %{Call-ID}i %>s" env=aol-calls',
    # <If> on SIP headers (the seed's "From INVITE aol.com authenticate")
    '<If "%{HTTP:From} =~ /aol\.com/ && %{REQUEST_METHOD} == \'INVITE\'">',
    '    SipRule log aol-calls',
    '    SipRule authenticate',
    '</If>',
    (map { loc("r404-$_", 'SipRule respond 404') } qw(udp tcp)),
    (map { loc("r302-$_", 'SipRule respond 302 sip:a@example.org sip:b@example.org;transport=tcp') }
     qw(udp tcp)),
    (map { loc("reg302-$_", '<If "%{REQUEST_METHOD} != \'REGISTER\'">', '    SipRule respond 302',
               '</If>') } qw(udp tcp)),
    (map { loc("allow-$_", 'SipRule respond 200', 'SipRule respond 404') } qw(udp tcp)),
    loc('par-udp', "SipRule proxy parallel sip:p1\@127.0.0.1:$P{u1} sip:p2\@127.0.0.1:$P{u2}"),
    loc('par-tcp', "SipRule proxy sip:p1\@127.0.0.1:$P{t1};transport=tcp "
                   . "sip:p2\@127.0.0.1:$P{t2};transport=tcp"),
    loc('seq-udp', "SipRule proxy sequential sip:p1\@127.0.0.1:$P{u1} sip:p2\@127.0.0.1:$P{u2}"),
    loc('seq-tcp', "SipRule proxy sequential sip:p1\@127.0.0.1:$P{t1};transport=tcp "
                   . "sip:p2\@127.0.0.1:$P{t2};transport=tcp"),
    (map { loc("dom-$_", "SipRule proxy 127.0.0.1:$P{u1}") } qw(udp tcp)),
    (map { loc("rec-$_", "SipRule record 127.0.0.1:$P{u2}") } qw(udp tcp)),
    (map { loc("auth-$_", 'SipRule authenticate digest', 'SipRule respond 486') } qw(udp tcp)),
    (map { loc("scr-$_", 'SipRule script answer488', 'SipRule respond 404') } qw(udp tcp)),
    (map { loc("quiet-$_", 'SipRule script quiet', 'SipRule respond 487') } qw(udp tcp)),
    loc('noscript', 'SipRule script not-there'),
    (map { loc("logged-$_", 'SipRule log', 'SipRule respond 404') } qw(udp tcp)),
    (map { loc("unlogged-$_", 'SipRule respond 404') } qw(udp tcp)),
    loc('bob', 'SipRule respond 403'),
    loc('fwd', 'SipRule proxy sip:dana@127.0.0.1:@SIPPORT@'),
    loc('else', '<If "%{HTTP:Subject} == \'a\'">', '    SipRule respond 486', '</If>',
        '<ElseIf "%{HTTP:Subject} == \'b\'">', '    SipRule respond 480', '</ElseIf>',
        '<Else>', '    SipRule respond 488', '</Else>'),
    loc('hostile', 'SipRuleFile @DIR@/hostile.rules'),
    loc('big', 'SipRuleFile @DIR@/big.rules'),
    loc('abs', 'SipRuleFile @DIR@/abs.rules'),
);

my $t = SipExplodeTest->new(
    explode => 0, consent => undef,
    vhost => \@vhost,
    scripts => { answer488 => "#!/bin/sh\nprintf 'SIP/2.0 488 Not Acceptable Here\\n\\n'\n" },
    start => 0);
{
    # a script that says nothing (the server's default action, RFC 3050
    # §5.6.1.6) but leaves a trace where the script user may write
    mkdir $t->dir . '/out';
    chmod 0777, $t->dir . '/out';
    open(my $q, '>', $t->scripts_dir . '/quiet') or die $!;
    print $q "#!/bin/sh\necho \"\$REQUEST_METHOD\" >> " . $t->dir . "/out/quiet.ran\nexit 0\n";
    close $q;
    chmod 0755, $t->scripts_dir . '/quiet';
}
{
    open(my $h, '>', $t->dir . '/hostile.rules') or die $!;
    print $h "# a caller's glob characters are text\nFrom MESSAGE aol.com 403\n";
    close $h;
    open(my $b, '>', $t->dir . '/big.rules') or die $!;
    print $b "From INVITE nobody$_.example.net 404\n" for 1 .. 9999;
    print $b "To INVITE big\@127.0.0.1 486\n";
    close $b;
    # the seed's "To INVITE cs.columbia.edu /usr/local/bin/user_script"
    mkdir $t->dir . '/bin';
    chmod 0755, $t->dir . '/bin';
    open(my $s, '>', $t->dir . '/bin/user_script') or die $!;
    print $s '#!/bin/sh' . "\n" . 'printf "SIP/2.0 482 Loop Detected\nX-Script: %s\n\n" "$REQUEST_URI"'
             . "\n";
    close $s;
    chmod 0755, $t->dir . '/bin/user_script';
    open(my $a, '>', $t->dir . '/abs.rules') or die $!;
    print $a "To INVITE 127.0.0.1 " . $t->dir . "/bin/user_script\n";
    close $a;
}
$t->start;
my $port = $t->sip_port;

my %peer = (u1 => $t->peer(name => 'p1', port => $P{u1}), u2 => $t->peer(name => 'p2', port => $P{u2}),
            t1 => $t->tcp_peer(name => 'p1', port => $P{t1}),
            t2 => $t->tcp_peer(name => 'p2', port => $P{t2}));

sub uri_of { return "sip:$_[0]\@127.0.0.1:$port" }

# A client over $tr: a raw UDP peer or a TCP connection to the server.
sub client {
    my ($tr) = @_;
    if ($tr eq 'udp') {
        my $p = $t->peer(name => 'uac');
        return { tr => 'udp', peer => $p, sock => $p->sock };
    }
    return { tr => 'tcp', sock => $t->tcp_connect };
}

sub build {
    my ($c, %o) = @_;
    my $method = $o{method} // 'INVITE';
    my $sock = $c->{sock};
    return $t->sip_request(method => $method, uri => $o{uri} // uri_of($o{user}),
                           transport => uc $c->{tr}, sock => $sock,
                           ($o{from} ? (from => $o{from}) : ()), ($o{to} ? (to => $o{to}) : ()),
                           call_id => $o{call_id} // rand_token(12) . '@rules.test',
                           cseq => $o{cseq} // 1,
                           headers => [ ($method eq 'INVITE'
                                         ? (Contact => '<sip:uac@127.0.0.1:' . $sock->sockport . '>')
                                         : ()), @{ $o{headers} || [] } ]);
}

sub csend {
    my ($c, $raw) = @_;
    $c->{tr} eq 'udp' ? $c->{peer}->send($raw) : $t->send_raw($c->{sock}, $raw);
}

# the final response to what $c sent (undef on timeout); a non-2xx final
# to an INVITE is acknowledged
sub cfinal {
    my ($c, $raw, $timeout) = @_;
    my $cid = SipTest::parse_msg($raw)->header('call-id');
    my $f;
    if ($c->{tr} eq 'udp') {
        $f = $c->{peer}->expect(final => 1, response => 1, call_id => $cid, timeout => $timeout // 5);
    } else {
        ($f) = grep { $_->is_final } $t->read_until_final($c->{sock}, $timeout // 5);
    }
    if ($f && $f->code >= 300 && SipTest::parse_msg($raw)->method eq 'INVITE') {
        csend($c, $t->ack_for($raw, $f));
    }
    return $f;
}

# send a request and wait for its final response
sub ask {
    my ($tr, %o) = @_;
    my $c = $o{client} // client($tr);
    my $raw = build($c, %o);
    csend($c, $raw);
    return (cfinal($c, $raw, $o{timeout}), $raw, $c);
}

# with digest credentials of alice when challenged
sub ask_auth {
    my ($tr, %o) = @_;
    my $b = sub {
        my (%x) = @_;
        return build({ tr => lc $x{transport}, sock => $x{sock} }, %o, cseq => $x{cseq},
                     ($x{call_id} ? (call_id => $x{call_id}) : ()),
                     ($x{from} ? (from => $x{from}) : ()),
                     headers => [ @{ $x{auth} || [] }, @{ $o{headers} || [] } ]);
    };
    return $t->send_auth($b, transport => $tr, user => 'alice', no_auth => $o{no_auth});
}

sub cid { return SipTest::parse_msg($_[0])->header('call-id') }

sub contacts { my ($r) = @_; return $r ? join(' ', $r->header_elems('contact')) : '' }

sub register {
    my ($tr, $user, $contact) = @_;
    my ($f) = ask($tr, method => 'REGISTER', uri => "sip:127.0.0.1:$port",
                  to => '<' . uri_of($user) . '>', from => '<' . uri_of($user) . '>;tag=r1',
                  headers => [ Contact => "<$contact>", Expires => 600 ]);
    return $f;
}

for my $tr (qw(udp tcp)) {
    # ---- respond
    my $mark = $t->log_mark;
    my ($f) = ask($tr, user => "r404-$tr");
    is($f && $f->code, 404, "$tr: respond 404");
    ok($t->wait_log($mark, qr/404 Not Found for INVITE sip:r404-$tr\@.*: rule \S+httpd\.conf:\d+$/m),
       "$tr: ... answered by the rule (not the default 404)");

    my ($r302, $c302);
    ($f, $r302, $c302) = ask($tr, user => "r302-$tr");
    is($f && $f->code, 302, "$tr: respond 302 with URIs");
    if ($tr eq 'udp' && $f) {
        # acknowledged: Confirmed until timer I, kept as a remnant of its key
        # (§17.2.1): a second ACK and a stray INVITE copy are absorbed
        csend($c302, $t->ack_for($r302, $f));
        csend($c302, $r302);
        ok(!$c302->{peer}->expect(response => 1, call_id => cid($r302), timeout => 1),
           "$tr: Confirmed: a repeated ACK and INVITE get no answer");
    }
    my $ct = contacts($f);
    like($ct, qr/<sip:a\@example\.org>/, "$tr: first URI in Contact");
    like($ct, qr/<sip:b\@example\.org;transport=tcp>/, "$tr: second URI in Contact");

    my $dev = "sip:dev-$tr\@127.0.0.1:5999";
    $f = register($tr, "reg302-$tr", $dev);
    is($f && $f->code, 200, "$tr: REGISTER passes the rule's <If>");
    ($f) = ask($tr, user => "reg302-$tr");
    is($f && $f->code, 302, "$tr: respond 302 without URIs");
    like(contacts($f), qr/<\Q$dev\E>/, "$tr: the registered contact in Contact");

    $f = register($tr, "allow-$tr", "sip:allowed-$tr\@127.0.0.1:5998");
    is($f && $f->code, 200, "$tr: respond 200 lets the registrar answer the REGISTER");
    like(contacts($f), qr/allowed-$tr/, "$tr: ... with the binding (the 404 after it not run)");

    # ---- proxy in parallel: both peers get the INVITE at once
    {
        my ($a, $b) = $tr eq 'udp' ? @peer{qw(u1 u2)} : @peer{qw(t1 t2)};
        $_->forget for $a, $b;
        my $c = client($tr);
        my $raw = build($c, user => "par-$tr");
        csend($c, $raw);
        my $ia = $a->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
        my $ib = $b->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
        ok($ia && $ib, "$tr: proxy parallel: both targets get the INVITE");
        like($ia ? $ia->uri : '', qr/^sip:p1\@/, "$tr: first target's Request-URI");
        like($ib ? $ib->uri : '', qr/^sip:p2\@/, "$tr: second target's Request-URI");
        $a->reply($ia, 486) if $ia;
        $b->reply($ib, 486) if $ib;
        $f = cfinal($c, $raw);
        is($f && $f->code, 486, "$tr: the best answer comes back");
    }
    # ---- in sequence: the second only after the first said 486
    {
        my ($a, $b) = $tr eq 'udp' ? @peer{qw(u1 u2)} : @peer{qw(t1 t2)};
        $_->forget for $a, $b;
        my $c = client($tr);
        my $raw = build($c, user => "seq-$tr");
        csend($c, $raw);
        my $ia = $a->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
        ok($ia, "$tr: proxy sequential: the first target gets the INVITE");
        ok(!$b->expect(method => 'INVITE', call_id => cid($raw), timeout => 1), "$tr: the second not yet");
        $a->reply($ia, 486) if $ia;
        my $ib = $b->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
        ok($ib, "$tr: the second after the first's 486");
        $b->reply($ib, 603) if $ib;
        $f = cfinal($c, $raw);
        ok($f && ($f->code == 603 || $f->code == 486), "$tr: a final answer comes back")
            or diag($f ? $f->code : 'none');
    }
    # ---- proxy to a domain, record: the Request-URI's user at that host
    {
        my ($u1, $u2) = @peer{qw(u1 u2)};
        $_->forget for $u1, $u2;
        my $c = client($tr);
        my $raw = build($c, user => "dom-$tr");
        csend($c, $raw);
        my $i = $u1->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
        is($i && $i->uri, "sip:dom-$tr\@127.0.0.1:$P{u1}", "$tr: proxy to a domain");
        $u1->reply($i, 480) if $i;
        $f = cfinal($c, $raw);
        is($f && $f->code, 480, "$tr: its answer comes back");

        $c = client($tr);
        $raw = build($c, user => "rec-$tr");
        csend($c, $raw);
        $i = $u2->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
        is($i && $i->uri, "sip:rec-$tr\@127.0.0.1:$P{u2}", "$tr: record to the voice-mail host");
        $u2->reply($i, 486) if $i;
        $f = cfinal($c, $raw);
        is($f && $f->code, 486, "$tr: the voice-mail host's answer comes back");
    }
    # ---- authenticate, then the next rule
    {
        my $r = ask_auth($tr, user => "auth-$tr", no_auth => 1);
        is($r->{final} && $r->{final}->code, 401, "$tr: authenticate challenges");
        $r = ask_auth($tr, user => "auth-$tr");
        ok($r->{challenged}, "$tr: challenged first");
        is($r->{final} && $r->{final}->code, 486, "$tr: with credentials the next rule applies");
    }
    # ---- script
    ($f) = ask($tr, user => "scr-$tr");
    is($f && $f->code, 488, "$tr: the named script answers (the rule after it not run)");
    # a script that leaves the request to the server: the next rule (seed §6)
    {
        my $ran = $t->dir . '/out/quiet.ran';
        unlink $ran;
        ($f) = ask($tr, user => "quiet-$tr");
        is($f && $f->code, 487, "$tr: a script that says nothing: the next rule answers");
        ok(-s $ran, "$tr: ... after the script ran");
    }

    # ---- log: only the requests a rule logged
    {
        my @logged = map { (ask($tr, user => "logged-$tr", call_id => "logged-$tr-$_\@x"))[0] }
                     1 .. 2;
        my @not = map { (ask($tr, user => "unlogged-$tr", call_id => "unlogged-$tr-$_\@x"))[0] }
                  1 .. 2;
        is(scalar(grep { $_ && $_->code == 404 } @logged, @not), 4, "$tr: logged and unlogged answered");
    }
}

# the CustomLog with env=sip-rule-log holds exactly the logged requests
{
    my $log = $t->dir . '/logs/rules.log';
    wait_until(3, sub { -s $log && (() = `cat $log` =~ /logged/g) >= 4 }, 0.1);
    open(my $fh, '<', $log);
    my @lines = $fh ? <$fh> : ();
    chomp @lines;
    is_deeply([ sort @lines ],
              [ sort map { my $tr = $_; map { "INVITE logged-$tr-$_\@x 404" } 1 .. 2 } qw(udp tcp) ],
              'CustomLog env=sip-rule-log: exactly the logged requests');
}

# ---- a <Location>'s rules apply to its user only
{
    my ($f) = ask('udp', user => 'bob');
    is($f && $f->code, 403, "bob's <Location> rule applies to bob");
    ($f) = ask('udp', user => 'carol');
    is($f && $f->code, 404, 'not to carol (never registered: the default 404)');
}

# ---- a SipRuleFile's script path: the administrator's own program
for my $tr (qw(udp tcp)) {
    my ($f) = ask($tr, user => 'abs');
    is($f && $f->code, 482, "$tr: the rule file's script path runs");
    like($f ? ($f->header('x-script') // '') : '', qr/^sip:abs\@/, '... as a SIP-CGI script');
}

# ---- proxy to a user of ours: her registered device
{
    my $u1 = $peer{u1};
    $u1->forget;
    my $f = register('udp', 'dana', "sip:dana-phone\@127.0.0.1:$P{u1}");
    is($f && $f->code, 200, 'dana registers');
    my $c = client('tcp');
    my $raw = build($c, user => 'fwd');
    csend($c, $raw);
    my $i = $u1->expect(method => 'INVITE', call_id => cid($raw), timeout => 5);
    is($i && $i->uri, "sip:dana-phone\@127.0.0.1:$P{u1}", "proxy to a user of ours reaches her device");
    $u1->reply($i, 486) if $i;
    $f = cfinal($c, $raw);
    is($f && $f->code, 486, '... and her answer comes back');
}

# ---- <If>, <ElseIf>, <Else> inside a <Location>
for (['a', 486], ['b', 480], ['c', 488]) {
    my ($subject, $code) = @$_;
    my ($f) = ask('tcp', user => 'else', method => 'MESSAGE', headers => [ Subject => $subject ]);
    is($f && $f->code, $code, "Subject $subject: the <If>/<ElseIf>/<Else> branch's rule");
}

# ---- <If> on SIP headers: From aol.com and INVITE
{
    my $r = ask_auth('udp', user => 'ifu', from => '<sip:x@aol.com>;tag=a1', no_auth => 1,
                     call_id => 'aol-1@x');
    is($r->{final} && $r->{final}->code, 401, '<If> From =~ aol.com && INVITE: authenticate');
    $r = ask_auth('udp', user => 'ifu', from => '<sip:x@aol.com>;tag=a2', call_id => 'aol-2@x');
    is($r->{final} && $r->{final}->code, 404, 'with credentials the normal steps go on');
    my ($f) = ask('udp', user => 'ifu', from => '<sip:x@example.net>;tag=e1');
    is($f && $f->code, 404, 'another From: no challenge');
    ($f) = ask('tcp', user => 'ifu', method => 'MESSAGE', from => '<sip:x@aol.com>;tag=a3');
    is($f && $f->code, 404, 'another method: no challenge');
    my $log = $t->dir . '/logs/aol.log';
    wait_until(3, sub { -s $log }, 0.1);
    my $text = do { local (@ARGV, $/) = ($log); <> } // '';
    like($text, qr/^INVITE aol-1\@x 401$/m, 'log <envvar>: its CustomLog env= has the aol call');
    unlike($text, qr/MESSAGE|example/, '... and nothing else');
}

# ---- a missing script: 500 and an error line naming the rule
{
    my $mark = $t->log_mark;
    my ($f) = ask('udp', user => 'noscript');
    is($f && $f->code, 500, 'a rule naming a script that is not there: 500');
    ok($t->wait_log($mark, qr/sip rules: .*rule \S+httpd\.conf:\d+ "script".*not in SipDirectory/),
       '... logged with the rule');
}

# ---- hostile values: the caller's text is never a pattern
{
    my ($f) = ask('udp', user => 'hostile', method => 'MESSAGE', from => '<sip:*@evil.net>;tag=h1');
    is($f && $f->code, 404, "From sip:*\@evil.net does not match aol.com");
    ($f) = ask('udp', user => 'hostile', method => 'MESSAGE',
               from => '<sip:x@aol.com.evil.net>;tag=h2');
    is($f && $f->code, 404, 'aol.com.evil.net does not match aol.com');
    ($f) = ask('udp', user => 'hostile', method => 'MESSAGE',
               from => '"aol.com" <sip:x@evil.net;maddr=aol.com>;tag=h3');
    is($f && $f->code, 404, 'aol.com in the display name or a parameter does not match');
    ($f) = ask('udp', user => 'hostile', method => 'MESSAGE', from => '<sip:x@Mail.AOL.com>;tag=h4');
    is($f && $f->code, 403, 'mail.aol.com matches, whatever the case');
}

# ---- 10 000 rules: loaded, and a request still answers quickly
{
    my $t0 = time;
    my ($f) = ask('udp', user => 'big');
    my $dt = time - $t0;
    is($f && $f->code, 486, 'the last of 10 000 rules applies');
    cmp_ok($dt, '<', 0.5, sprintf('... answered in %.3f s', $dt));
    $t0 = time;
    ($f) = ask('udp', user => 'carol');
    cmp_ok(time - $t0, '<', 0.5, 'another user is not slowed down');
}

$t->stop;

# ---- apache2 -t refuses a bad rule, with its file and line
sub conf_test {
    my (%o) = @_;
    my $b = SipExplodeTest->new(explode => 0, consent => undef, start => 0, vhost => $o{vhost});
    $o{setup}->($b) if $o{setup};
    $b->write_conf;
    my ($rc, $out) = $b->_run_apache('-t');
    my $conf = $b->conf_file;
    my $n = 0;
    my $line = 0;
    open(my $fh, '<', $conf) or die $!;
    while (<$fh>) { $n++; $line = $n if index($_, $o{needle}) >= 0 }
    close $fh;
    $b->cleanup_dir;
    return ($rc, $out, $conf, $line);
}
{
    my ($rc, $out, $conf, $line) = conf_test(vhost => ['SipRule respond 99'],
                                             needle => 'SipRule respond 99');
    isnt($rc, 0, 'apache2 -t refuses a bad SipRule');
    like($out, qr/line \Q$line\E of \Q$conf\E/, '... naming the file and line') or diag($out);
    like($out, qr/SipRule: respond needs a status from 200 to 699/, '... and why');

    ($rc, $out, $conf, $line) = conf_test(vhost => ['SipRule log |/usr/bin/logger'],
                                          needle => 'SipRule log');
    isnt($rc, 0, 'apache2 -t refuses a log destination');
    like($out, qr/CustomLog <file> <format> env=sip-rule-log/, '... pointing at CustomLog');

    my $setup = sub {
        my $b = shift;
        open(my $fh, '>', $b->dir . '/bad.rules') or die $!;
        print $fh "# ok\nFrom REGISTER cs.columbia.edu 200\nTo INVITE * proxi example.org\n";
        close $fh;
    };
    ($rc, $out, $conf, $line) = conf_test(vhost => ['SipRuleFile bad.rules'],
                                          needle => 'SipRuleFile', setup => $setup);
    isnt($rc, 0, 'apache2 -t refuses a bad SipRuleFile line');
    like($out, qr/line \Q$line\E of \Q$conf\E/, '... naming the directive');
    like($out, qr{/bad\.rules:3: unknown action 'proxi'}, '... and the rule file and its line')
        or diag($out);
}

# ---- config order (vhost, <Location>, <If>) and a graceful restart
{
    my @order = (
        'SipRule authenticate',
        loc('order', 'SipRule respond 403'),
        '<If "%{HTTP:Subject} == \'if\'">', '    SipRule respond 488', '</If>',
        loc('alice', '<If "%{REQUEST_METHOD} != \'REGISTER\'">', '    SipRule respond 302', '</If>'),
    );
    $t = SipExplodeTest->new(explode => 0, consent => undef, vhost => \@order);
    $port = $t->sip_port;
    my $r = ask_auth('udp', user => 'order', no_auth => 1);
    is($r->{final} && $r->{final}->code, 401, 'order: the vhost rule first');
    $r = ask_auth('udp', user => 'order', headers => [ Subject => 'if' ]);
    is($r->{final} && $r->{final}->code, 403, 'order: the <Location> rule before the <If>');
    $r = ask_auth('tcp', user => 'other', headers => [ Subject => 'if' ]);
    is($r->{final} && $r->{final}->code, 488, 'order: the <If> rule where no <Location> answers');

    my $dev = 'sip:alice-phone@127.0.0.1:5997';
    my $reg = sub {
        my (%x) = @_;
        return $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port",
                               transport => $x{transport}, sock => $x{sock}, cseq => $x{cseq},
                               ($x{call_id} ? (call_id => $x{call_id}) : ()),
                               to => '<' . uri_of('alice') . '>',
                               from => $x{from} // ('<' . uri_of('alice') . '>;tag=g1'),
                               headers => [ @{ $x{auth} || [] }, Contact => "<$dev>",
                                            Expires => 600 ]);
    };
    $r = $t->send_auth($reg, transport => 'udp', user => 'alice');
    is($r->{final} && $r->{final}->code, 200, 'alice registers');
    $r = ask_auth('udp', user => 'alice');
    like(contacts($r->{final}), qr/\Q$dev\E/, "302 to alice's binding");

    # the <Location> rule changes; apachectl graceful (SIGUSR1)
    s/respond 403/respond 404/ for @order;
    $t->{vhost_conf} = join("\n", grep { !/^SipExplode/ } @order, 'SipExplodeRate 1000');
    $t->write_conf;
    my $old = $t->engine_pid;
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    ok(wait_until(10, sub { my $p = $t->engine_pid; $p && $p != ($old // 0) }, 0.05),
       'a new engine');
    ok(wait_until(5, sub {
        my $o = ask_auth('udp', method => 'OPTIONS', uri => "sip:127.0.0.1:$port");
        $o->{final} && $o->{final}->code == 200 }, 0.1), 'answering again');
    $r = ask_auth('udp', user => 'order');
    is($r->{final} && $r->{final}->code, 404, 'the changed rule applies after the graceful restart');
    $r = ask_auth('tcp', user => 'alice');
    is($r->{final} && $r->{final}->code, 302, 'alice still redirected');
    like(contacts($r->{final}), qr/\Q$dev\E/, "... to the binding registered before the restart");
    $t->stop;
}

done_testing;
