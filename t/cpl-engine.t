#!/usr/bin/perl
# CPL scripts of SipDirectory run by the engine (issue 13; docs/cpl.md):
# each node type reaching the engine over UDP and TCP (reject, redirect,
# proxy to a registered user and to raw-socket callees, the proxy outputs
# busy/noanswer/failure/redirection with short timeouts, sequential and
# first-only, lookup registration, log into the error log and the
# CustomLog, mail through a test mail command), CANCEL during a CPL proxy,
# an invalid file logged at start-up and skipped, mod_status counters, and
# (second server) the routing order: SIP-CGI before CPL for the same user,
# default.cpl after users' scripts, a failing script falling back, CPL only
# for INVITE outside a dialog.  No zombie, the engine never restarted.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use SipCgiTest qw(parse_msg wait_until rand_token);

my $NS = 'urn:ietf:params:xml:ns:cpl';
sub cpl { my ($body) = @_; return qq{<?xml version="1.0" encoding="UTF-8"?>\n<cpl xmlns="$NS">\n$body\n</cpl>\n} }

my $STATUS_CONF = <<"EOC";
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /server-status>
    SetHandler server-status
</Location>
EOC

# a sendmail-style command: the message on stdin goes to a numbered file
my $MAILCMD = <<'SH';
#!/bin/sh
d=@VAR@/mail
mkdir -p "$d" 2>/dev/null
i=1
while ! mkdir "$d/m.$i" 2>/dev/null; do i=$((i+1)); done
echo "$@" > "$d/m.$i/args"
cat > "$d/m.$i/msg"
SH

my $t = SipCgiTest->new(
    server_conf => $STATUS_CONF,
    vhost_conf => join("\n",
        'CustomLog @DIR@/logs/cpl_access.log "%{Call-ID}i %>s cpl=[%{cpl-log}n]"',
        'SipCplMail "@DIR@/mailcmd -t -i"',
        'SipProxyTimerC 5'),
    scripts => {
        # invalid: <reject> without its status (schema)
        'bad@127.0.0.1.cpl' => { text => cpl('<incoming><reject/></incoming>'), mode => 0644 },
        'norm@127.0.0.1.cpl' => { text => cpl('<incoming><reject status="486" reason="valid at start"/></incoming>'),
                                  mode => 0644 },
    },
    setup => sub { $_[0]->write_script($_[0]->dir . '/mailcmd', abs => 1, text => $MAILCMD) },
);
my $port = $t->sip_port;
my $us = "127.0.0.1:$port";
my $engine = $t->engine_pid;

# ---- start-up check of SipDirectory's files
ok(grep({ /cpl: .*bad\@127\.0\.0\.1\.cpl is not a valid CPL script and will be skipped: ./ } split(/\n/, $t->log_since(0))),
   'an invalid administrator .cpl is logged at start-up with the reason');
ok(!grep({ /norm\@127\.0\.0\.1\.cpl is not a valid/ } split(/\n/, $t->log_since(0))), '... a valid one is not');

sub admin_cpl {
    my ($name, $body) = @_;
    $t->write_script("$name\@127.0.0.1.cpl", text => cpl($body), mode => 0644);
}

sub http {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->http_port,
                                  Proto => 'tcp', Timeout => 5) or return '';
    print $s "GET $path HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $buf = '';
    while ($sel->can_read(5)) { sysread($s, my $b, 65536) or last; $buf .= $b }
    return $buf;
}
sub stats {
    my %s = http('/server-status?auto') =~ /^(Sip\w+): (\d+)$/mg;
    return \%s;
}
my $s0 = stats();
ok(defined $s0->{SipCplRuns}, 'mod_status shows SipCplRuns') or diag(join ' ', sort keys %$s0);

my $caller = $t->peer(name => 'caller');

sub answer_of { my ($r) = @_; return $r ? $r->code . ' ' . $r->reason : 'none' }

# INVITE from the caller peer; the final response (and the raw INVITE)
sub call {
    my ($user, %o) = @_;
    my $inv = $caller->invite(uri => $o{uri} // $t->local_uri($user), headers => $o{headers} // []);
    my $fin = $caller->final_for($inv, $o{timeout} // 5);
    $caller->ack($inv, $fin) if $fin && $fin->code >= 300;
    return wantarray ? ($fin, $inv) : $fin;
}

# ---- the bad file is skipped at call time: default handling (not registered: 404)
{
    my $mark = $t->log_mark;
    my $r = call('bad');
    is($r && $r->code, 404, 'an INVITE for the user of an invalid script gets default handling (404)');
    ok(grep({ /cpl: bad\@127\.0\.0\.1\.cpl is not a usable CPL script, skipped/ } split(/\n/, $t->log_since($mark))),
       '... and a log line says it was skipped');
    $r = call('norm');
    is($r && $r->code . ' ' . $r->reason, '486 valid at start', 'the valid start-up script runs');
}

# ---- reject, over UDP and TCP
admin_cpl('rej', '<incoming><reject status="busy" reason="Gone fishing"/></incoming>');
{
    my $r = call('rej');
    is($r && $r->code . ' ' . $r->reason, '486 Gone fishing', 'reject busy with its reason (UDP)');
    my @x = $t->transact('tcp', method => 'INVITE', uri => $t->local_uri('rej'));
    is(@x && $x[-1]->code . ' ' . $x[-1]->reason, '486 Gone fishing', '... and over TCP');
}
admin_cpl('rej2', '<incoming><reject status="reject"/></incoming>');
is(call('rej2')->code, 603, 'reject status="reject" is 603');

# ---- redirect: 302 with the locations as Contacts, q from the priorities; 301 permanent
admin_cpl('redir', '<incoming><location url="sip:one@example.com" priority="0.8">'
                 . '<location url="sip:two@example.com" priority="0.3"><redirect/></location></location></incoming>');
admin_cpl('moved', '<incoming><location url="sip:new@example.com"><redirect permanent="yes"/></location></incoming>');
{
    my $r = call('redir');
    is($r && $r->code, 302, 'redirect -> 302');
    my $c = join(',', $r ? $r->headers('contact') : ());
    like($c, qr/<sip:one\@example\.com>;q=0\.8/, '... Contact one with q=0.8');
    like($c, qr/<sip:two\@example\.com>;q=0\.3/, '... Contact two with q=0.3');
    $r = call('moved');
    is($r && $r->code, 301, 'redirect permanent="yes" -> 301');
    like($r ? $r->header('contact') : '', qr/sip:new\@example\.com/, '... to its location');
    my @x = $t->transact('tcp', method => 'INVITE', uri => $t->local_uri('redir'));
    is(@x && $x[-1]->code, 302, '... 302 over TCP too');
}

# ---- proxy to a registered user of ours (looked up here, no trip through ourselves)
my $phone = $t->peer(name => 'carolphone');
sub register {
    my ($user, $contact) = @_;
    my @x = $t->transact('udp', method => 'REGISTER', uri => "sip:$us", to => "<sip:$user\@$us>",
                         from => "<sip:$user\@$us>;tag=" . rand_token(6),
                         headers => [ Contact => "<$contact>", Expires => 600 ]);
    return @x && $x[-1]->code == 200;
}
ok(register('carol', $phone->uri('carol')), 'carol registers a device');
admin_cpl('px', qq{<incoming><location url="sip:carol\@$us"><proxy/></location></incoming>});
{
    my $inv = $caller->invite(uri => $t->local_uri('px'));
    my $cid = $caller->call_id($inv);
    my $f = $phone->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f, 'proxy to sip:carol@us: carol\'s device gets the INVITE');
    is($f && $f->uri, $phone->uri('carol'), '... at its registered contact');
    my @rr = $f ? $f->header_elems('record-route') : ();
    is(scalar(@rr), 1, '... with one Record-Route of ours');
    $phone->reply($f, 180) if $f;
    ok($caller->expect(call_id => $cid, code => 180, timeout => 3), 'the 180 reaches the caller');
    $phone->reply($f, 200, body => "v=0\r\n", content_type => 'application/sdp') if $f;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 200, 'the 200 reaches the caller at once');
    $caller->ack($inv, $fin) if $fin;
    ok($phone->expect(method => 'ACK', call_id => $cid, timeout => 3), '... and its ACK reaches carol');
}

# ---- proxy outputs, with a raw callee and short timeouts
my $callee = $t->peer(name => 'callee');
my $curi = $callee->uri('x');
my $outs = '<busy><reject status="403" reason="was busy"/></busy>'
         . '<noanswer><reject status="403" reason="no answer"/></noanswer>'
         . '<redirection><reject status="403" reason="redirected"/></redirection>'
         . '<failure><reject status="403" reason="failed"/></failure>';
admin_cpl('out', qq{<incoming><location url="$curi"><proxy timeout="2" recurse="no">$outs</proxy></location></incoming>});
for my $case ([486, 'was busy'], [600, 'was busy'], [404, 'failed'], [503, 'failed'], [302, 'redirected'],
              [480, 'no answer']) {
    my ($code, $want) = @$case;
    my $inv = $caller->invite(uri => $t->local_uri('out'));
    my $cid = $caller->call_id($inv);
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f, $code, ($code == 302 ? (contact => '<sip:else@example.com>') : ())) if $f;
    my $fin = $caller->final_for($inv, 4);
    is($fin && $fin->code . ' ' . $fin->reason, "403 $want", "callee answers $code -> the $want output");
    $caller->ack($inv, $fin) if $fin;
    ok($callee->expect(method => 'ACK', call_id => $cid, timeout => 2), "... its $code is ACKed");
}
{   # no final answer within timeout="2": the branch is cancelled, the noanswer output runs
    my $inv = $caller->invite(uri => $t->local_uri('out'));
    my $cid = $caller->call_id($inv);
    my $t0 = time;
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f, 180) if $f;
    my $c = $callee->expect(method => 'CANCEL', call_id => $cid, timeout => 4);
    ok($c, 'timeout: the callee gets a CANCEL');
    my $waited = time - $t0;
    ok($waited > 1.5 && $waited < 3.5, sprintf('... after the script\'s 2 s (%.1f s)', $waited));
    if ($c) { $callee->reply($c, 200); $callee->reply($f, 487) }
    my $fin = $caller->final_for($inv, 4);
    is($fin && $fin->code . ' ' . $fin->reason, '403 no answer', '... and the noanswer output answers');
    $caller->ack($inv, $fin) if $fin;
}
# without outputs: the best response goes upstream (RFC 3880 §10)
admin_cpl('plain', qq{<incoming><location url="$curi"><proxy timeout="2"/></location></incoming>});
{
    my $inv = $caller->invite(uri => $t->local_uri('plain'));
    my $cid = $caller->call_id($inv);
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f, 486, reason => 'Callee Busy') if $f;
    my $fin = $caller->final_for($inv, 4);
    is($fin && $fin->code . ' ' . $fin->reason, '486 Callee Busy', 'proxy without outputs: the callee\'s 486 goes upstream');
    $caller->ack($inv, $fin) if $fin;
}
# over TCP: the caller on TCP, the callee on UDP
{
    my $s = $t->tcp_connect;
    my $cid = rand_token(12) . '@tcp';
    my $raw = $t->sip_request(method => 'INVITE', uri => $t->local_uri('plain'), transport => 'TCP',
                              sock => $s, call_id => $cid);
    $t->send_raw($s, $raw);
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f, 'TCP caller: the CPL proxy forwards to the UDP callee');
    $callee->reply($f, 486, reason => 'Busy On TCP') if $f;
    my @r = $t->read_until_final($s, 4);
    is(@r && $r[-1]->code . ' ' . $r[-1]->reason, '486 Busy On TCP', '... and the answer comes back over TCP');
}
# parallel: a 2xx goes upstream at once, the other branch is cancelled
my $callee3 = $t->peer(name => 'callee3');
admin_cpl('par', '<incoming><location url="' . $callee->uri('p1') . '"><location url="' . $callee3->uri('p2')
               . '"><proxy timeout="10"/></location></location></incoming>');
{
    my $inv = $caller->invite(uri => $t->local_uri('par'));
    my $cid = $caller->call_id($inv);
    my $f1 = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    my $f3 = $callee3->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f1 && $f3, 'parallel: both locations get the INVITE');
    $callee3->reply($f3, 180) if $f3;
    $callee->reply($f1, 200) if $f1;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 200, '... the first 2xx goes upstream at once');
    $caller->ack($inv, $fin) if $fin;
    my $c = $callee3->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, '... and the ringing branch is cancelled');
    if ($c) { $callee3->reply($c, 200); $callee3->reply($f3, 487) }
}

# call forwarding on busy: a second <proxy> in the busy output
admin_cpl('cfb', '<incoming><location url="' . $callee->uri('desk') . '"><proxy timeout="3"><busy>'
               . '<location url="' . $callee3->uri('vm') . '" clear="yes"><proxy timeout="3"/></location>'
               . '</busy></proxy></location></incoming>');
{
    my $inv = $caller->invite(uri => $t->local_uri('cfb'));
    my $cid = $caller->call_id($inv);
    my $f1 = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f1, 486) if $f1;
    my $f3 = $callee3->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    is($f3 && $f3->uri, $callee3->uri('vm'), 'forward on busy: the busy output proxies to the second location');
    $callee3->reply($f3, 200) if $f3;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 200, '... whose 200 reaches the caller');
    $caller->ack($inv, $fin) if $fin;
    ok(!$caller->all(call_id => $cid, code => 486), '... and the first 486 never did');
}

# parallel: a 6xx ends the search, the other branch is cancelled
{
    my $inv = $caller->invite(uri => $t->local_uri('par'));
    my $cid = $caller->call_id($inv);
    my $f1 = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    my $f3 = $callee3->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee3->reply($f3, 180) if $f3;
    $callee->reply($f1, 603) if $f1;
    my $c = $callee3->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, 'parallel: after a 603 the ringing branch is cancelled');
    if ($c) { $callee3->reply($c, 200); $callee3->reply($f3, 487) }
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 603, '... and the 603 goes upstream (6xx over 487)');
    $caller->ack($inv, $fin) if $fin;
}

# recurse (default yes): a 302 from the callee is followed
my $callee2 = $t->peer(name => 'callee2');
{
    my $inv = $caller->invite(uri => $t->local_uri('plain'));
    my $cid = $caller->call_id($inv);
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f, 302, contact => '<' . $callee2->uri('y') . '>') if $f;
    my $g = $callee2->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($g, 'recurse: the 302\'s Contact gets the INVITE');
    is($g && $g->uri, $callee2->uri('y'), '... at that URI');
    $callee2->reply($g, 200) if $g;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 200, '... and its 200 reaches the caller');
    $caller->ack($inv, $fin) if $fin;
}

# a user of ours never registered (a made-up 404) takes the failure output
admin_cpl('pxghost', qq{<incoming><location url="sip:ghost\@$us"><proxy timeout="2">$outs</proxy></location></incoming>});
is(answer_of(call('pxghost')), '403 failed', 'proxy to a user of ours never registered: failure output');

# ---- sequential and first-only
my $c2uri = $callee2->uri('z');
admin_cpl('seq', qq{<incoming><location url="$curi" priority="1.0"><location url="$c2uri" priority="0.5">}
               . q{<proxy ordering="sequential" timeout="2"/></location></location></incoming>});
admin_cpl('first', qq{<incoming><location url="$curi" priority="1.0"><location url="$c2uri" priority="0.5">}
                 . q{<proxy ordering="first-only" timeout="2"/></location></location></incoming>});
{
    my $inv = $caller->invite(uri => $t->local_uri('seq'));
    my $cid = $caller->call_id($inv);
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f, 'sequential: the first location gets the INVITE');
    ok(!$callee2->expect(method => 'INVITE', call_id => $cid, timeout => 0.5), '... the second not yet');
    $callee->reply($f, 480) if $f;
    my $g = $callee2->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($g, '... after its 480, the second does');
    $callee2->reply($g, 200) if $g;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 200, '... whose 200 reaches the caller');
    $caller->ack($inv, $fin) if $fin;

    # the first one only rings: after the timeout it is cancelled, the second tried
    $inv = $caller->invite(uri => $t->local_uri('seq'));
    $cid = $caller->call_id($inv);
    $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f, 180) if $f;
    my $c = $callee->expect(method => 'CANCEL', call_id => $cid, timeout => 4);
    ok($c, 'sequential: a location that only rings is cancelled after its timeout');
    if ($c) { $callee->reply($c, 200); $callee->reply($f, 487) }
    $g = $callee2->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($g, '... and the next location gets the INVITE');
    $callee2->reply($g, 486) if $g;
    $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 486, '... the best response (486 over 487) goes upstream');
    $caller->ack($inv, $fin) if $fin;

    $inv = $caller->invite(uri => $t->local_uri('first'));
    $cid = $caller->call_id($inv);
    $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f, 'first-only: the first location gets the INVITE');
    $callee->reply($f, 486) if $f;
    $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 486, '... its 486 goes upstream');
    $caller->ack($inv, $fin) if $fin;
    ok(!$callee2->expect(method => 'INVITE', call_id => $cid, timeout => 0.5), '... the second never gets it');
}

# ---- lookup source="registration": the owner's own bindings
admin_cpl('look', '<incoming><lookup source="registration"><success><proxy/></success>'
                . '<notfound><reject status="404" reason="nobody here"/></notfound></lookup></incoming>');
admin_cpl('lookx', '<incoming><lookup source="http://example.com/where"><success><proxy/></success>'
                 . '<failure><reject status="500" reason="lookup failed"/></failure></lookup></incoming>');
{
    my $r = call('look');
    is($r && $r->code . ' ' . $r->reason, '404 nobody here', 'lookup registration, none: notfound output');
    my $lphone = $t->peer(name => 'lookphone');
    ok(register('look', $lphone->uri('look')), 'the owner registers');
    my $inv = $caller->invite(uri => $t->local_uri('look'));
    my $cid = $caller->call_id($inv);
    my $f = $lphone->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f, 'lookup registration: success output proxies to the binding');
    $lphone->reply($f, 603) if $f;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 603, '... and its answer reaches the caller');
    $caller->ack($inv, $fin) if $fin;
    $r = call('lookx');
    is($r && $r->code . ' ' . $r->reason, '500 lookup failed', 'another lookup source: failure output');
}

# ---- log: a line in the error log and in the CustomLog (%{cpl-log}n)
admin_cpl('logged', '<incoming><log name="calls" comment="a call for logged"><reject status="403"/></log></incoming>');
{
    my $mark = $t->log_mark;
    my ($r, $inv) = call('logged');
    is($r && $r->code, 403, 'log then reject');
    my $cid = $caller->call_id($inv);
    ok(grep({ /\[sip:info\].*cpl: logged\@127\.0\.0\.1\.cpl \(owner sip:logged\@127\.0\.0\.1\) log calls: a call for logged/ }
            split(/\n/, $t->log_since($mark))), '... an info line names script, owner, log name and comment');
    my $alog = $t->dir . '/logs/cpl_access.log';
    my $line;
    wait_until(3, sub { open(my $fh, '<', $alog) or return 0; ($line) = grep { /^\Q$cid\E / } <$fh>; $line }, 0.1);
    like($line // '', qr/ 403 cpl=\[calls: a call for logged\]/, '... and %{cpl-log}n shows it in the CustomLog');
}

# ---- mail through SipCplMail
admin_cpl('mailer', '<incoming><mail url="mailto:ops@example.com?subject=Missed%20call">'
                  . '<reject status="486"/></mail></incoming>');
{
    my $r = call('mailer');
    is($r && $r->code, 486, 'mail then reject');
    my $msg;
    wait_until(5, sub { open(my $fh, '<', $t->var . '/mail/m.1/msg') or return 0; local $/; $msg = <$fh>; $msg }, 0.1);
    like($msg // '', qr/^To: ops\@example\.com\r?$/mi, '... the mail command got the message, To the URL\'s address');
    like($msg // '', qr/^Subject: Missed call\r?$/mi, '... with its subject');
    my $args = do { open(my $fh, '<', $t->var . '/mail/m.1/args'); local $/; $fh ? <$fh> : '' };
    like($args // '', qr/^-t -i$/m, '... run with SipCplMail\'s arguments, no shell');
}

# ---- the mail rate limit: at most 5 per owner and minute
{
    my $mark = $t->log_mark;
    call('mailer') for 1 .. 6;
    my $n;
    wait_until(5, sub { $n = () = glob($t->var . '/mail/m.*/msg'); $n >= 5 }, 0.1);
    sleep 0.5;
    $n = () = glob($t->var . '/mail/m.*/msg');
    is($n, 5, 'six more calls of one owner within a minute: only 4 more mails (5 in all)');
    like($t->log_since($mark), qr/cpl: mailer\@127\.0\.0\.1\.cpl \(owner sip:mailer\@127\.0\.0\.1\): mail not sent: more than 5 a minute/,
         '... the others are logged as refused');
}

# ---- CANCEL from the caller while the script proxies
admin_cpl('ring', qq{<incoming><location url="$curi"><proxy timeout="20"><noanswer><reject status="480"/></noanswer></proxy></location></incoming>});
{
    my $inv = $caller->invite(uri => $t->local_uri('ring'));
    my $cid = $caller->call_id($inv);
    my $f = $callee->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    $callee->reply($f, 180) if $f;
    ok($caller->expect(call_id => $cid, code => 180, timeout => 3), 'a ringing CPL proxy ...');
    $caller->cancel($inv);
    my $c200 = $caller->expect(call_id => $cid, cseq_method => 'CANCEL', final => 1, timeout => 3);
    is($c200 && $c200->code, 200, '... CANCEL answered 200');
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 487, '... the INVITE ends with 487');
    $caller->ack($inv, $fin) if $fin;
    my $c = $callee->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
    ok($c, '... and the callee gets a CANCEL');
    if ($c) { $callee->reply($c, 200); $callee->reply($f, 487) }
    ok($callee->expect(method => 'ACK', call_id => $cid, timeout => 3), '... whose 487 is ACKed');
    ok(!$caller->expect(call_id => $cid, cseq_method => 'INVITE', final => 1, timeout => 1),
       '... and the script\'s noanswer output never answers afterwards');
}

# ---- 100 calls at once through a CPL proxy
{
    my @invs = map { $caller->invite(uri => $t->local_uri('plain')) } 1 .. 100;
    my %cids = map { ($caller->call_id($_) => 1) } @invs;
    my $n = 0;
    while (my $f = $callee->expect(method => 'INVITE', timeout => 3,
                                   filter => sub { $cids{ $_[0]->header('call-id') // '' } })) {
        $callee->reply($f, 486);
        last if ++$n == 100;
    }
    is($n, 100, '100 calls at once: the callee gets every INVITE once');
    my $got = grep { my $r = $caller->final_for($_, 5); $caller->ack($_, $r) if $r; $r && $r->code == 486 } @invs;
    is($got, 100, '... and every caller its 486');
}

# ---- counters
{
    my $s1 = stats();
    cmp_ok(($s1->{SipCplRuns} // 0) - ($s0->{SipCplRuns} // 0), '>=', 33, 'SipCplRuns counted the runs');
    cmp_ok(($s1->{SipCplProxies} // 0) - ($s0->{SipCplProxies} // 0), '>=', 15, 'SipCplProxies counted proxies');
    cmp_ok(($s1->{SipCplFailures} // 0) - ($s0->{SipCplFailures} // 0), '>=', 1, 'SipCplFailures counted the invalid script');
    is(($s1->{SipCplMails} // 0) - ($s0->{SipCplMails} // 0), 5, 'SipCplMails counted the mails');
    is(($s1->{SipCplMailsRefused} // 0) - ($s0->{SipCplMailsRefused} // 0), 2, 'SipCplMailsRefused the refused ones');
    my $before = $s1->{SipCplRuns};
    call('rej');
    is(stats()->{SipCplRuns}, $before + 1, 'one more call, one more run');
}

is($t->engine_pid, $engine, 'the engine was never restarted');
ok(!grep({ /sip engine .* died/ } split(/\n/, $t->log_since(0))), 'no engine death in the log');
$t->stop;
done_testing;
