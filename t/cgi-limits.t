#!/usr/bin/perl
# RFC 3050 conformance: limits and errors (§5.6 resource limits, §5.8,
# exit status / crash policy that RFC 3050 leaves open): SipScriptTimeout,
# SipScriptMaxOutput, crashes and exit codes, empty output (default
# action), malformed actions, messages answered 400 never reach a script,
# SipMaxScripts.  Checklist items R75, R76, R78 (R77 is not implemented).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg);

my $t = SipCgiTest->new(vhost_conf => "SipScriptTimeout 1\nSipScriptMaxOutput 4096");
my $port = $t->sip_port;

my %scripts = (
    sleeper    => "sleep 9.8765\nprintf 'SIP/2.0 200 OK\\n\\n'",
    bigout     => "printf 'SIP/2.0 200 OK\\nContent-Type: text/plain\\n\\n'\nyes xxxxxxxxxxxxxxx | head -c 20000",
    segv       => "kill -SEGV \$\$",
    exit3      => "exit 3",
    empty      => "exit 0",
    actexit    => "printf 'SIP/2.0 486 Busy Here\\nX-Then: exit 7\\n\\n'\nexit 7",
    ringcrash  => "printf 'SIP/2.0 180 Ringing\\n\\n'\nsleep 0.2\nkill -KILL \$\$",
    unknownact => "printf 'CGI-FROBNICATE now SIP/2.0\\n\\nSIP/2.0 486 Busy Here\\nX-After: unknown\\n\\n'",
    badproxy   => "printf 'CGI-PROXY-REQUEST sip:x\@127.0.0.1:5999\\n\\n'",
    badcookie  => "printf 'CGI-SET-COOKIE bad\"token SIP/2.0\\n\\nSIP/2.0 486 Busy Here\\n\\n'",
    badagain   => "printf 'CGI-AGAIN maybe SIP/2.0\\n\\nSIP/2.0 486 Busy Here\\n\\n'",
    r75        => "printf 'SIP/2.0 200 OK\\n\\n'",
);
$t->cgi_script("$_\@127.0.0.1", $scripts{$_}) for keys %scripts;

sub ask {
    my ($user, %a) = @_;
    my $uac = $t->peer(name => "uac-$user");
    my $method = $a{method} // 'INVITE';
    my $t0 = time;
    my $raw = $uac->request(method => $method, uri => $t->local_uri($user));
    my $cid = $uac->call_id($raw);
    my @r;
    while (my $m = $uac->expect(call_id => $cid, response => 1, timeout => $a{timeout} // 5)) {
        push @r, $m;
        last if $m->is_final;
    }
    $uac->ack($raw, $r[-1]) if @r && $r[-1]->is_final && $method eq 'INVITE';
    return (time - $t0, $raw, @r);
}
sub codes { join ' ', map { $_->code } grep { $_->code != 100 } @_ }
sub no_procs {
    my ($needle) = @_;
    my @p;
    SipTest::wait_until(3, sub { @p = $t->procs_matching($needle); !@p }, 0.1);
    return !@p;
}

# ---- R76: time limit
{
    my $mark = $t->log_mark;
    my ($el, $raw, @r) = ask('sleeper');
    is(codes(@r), '500', 'R76: a script running longer than SipScriptTimeout -> 500 upstream');
    ok($el >= 0.9 && $el < 3, sprintf('R76: ... after the time limit (%.2f s, limit 1 s)', $el));
    ok(no_procs('sleep 9.8765'), 'R76: the script was killed (MAY), with its children');
    ok($t->wait_log($mark, qr/sleeper\@127\.0\.0\.1.*timed out/), 'R76: logged');
}

# ---- R76: time limit on a response-triggered run
{
    my $uas = $t->peer(name => 'uas-slow');
    $t->cgi_script('slowresp@127.0.0.1', "if [ -n \"\$REQUEST_METHOD\" ]; then\n"
        . "    printf 'CGI-PROXY-REQUEST " . $uas->uri('b') . " SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'\n"
        . "else\n    sleep 8.7654\nfi");
    my $uac = $t->peer(name => 'uac-slowresp');
    my $inv = $uac->invite(uri => $t->local_uri('slowresp'));
    my $f = $uas->expect(method => 'INVITE', call_id => $uac->call_id($inv));
    my $t0 = time;
    $uas->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv, 4);
    is($fin && $fin->code, 500, 'R76: a response-triggered run over the time limit -> 500 upstream');
    ok(time - $t0 >= 0.9, 'R76: ... once the limit is reached');
    $uac->ack($inv, $fin) if $fin;
    ok(no_procs('sleep 8.7654'), 'R76: response run killed');
}

# ---- R76: output limit (SipScriptMaxOutput)
{
    my $mark = $t->log_mark;
    my ($el, $raw, @r) = ask('bigout', method => 'MESSAGE');
    is(codes(@r), '500', 'R76: output beyond SipScriptMaxOutput -> 500 upstream');
    ok($t->wait_log($mark, qr/bigout\@127\.0\.0\.1.*SipScriptMaxOutput/), 'R76: logged');
}

# ---- R78: crash and exit status
{
    my $mark = $t->log_mark;
    my (undef, undef, @r) = ask('segv');
    is(codes(@r), '500', 'R78: a script killed by a signal without output -> 500');
    ok($t->wait_log($mark, qr/segv\@127\.0\.0\.1.*signal/), 'R78: crash logged');
    (undef, undef, @r) = ask('exit3');
    is(codes(@r), '500', 'R78: non-zero exit without any action -> 500');
    (undef, undef, @r) = ask('actexit');
    is(codes(@r), '486', 'R78: non-zero exit after a valid action: the action stands (486)');
    is($r[-1] && $r[-1]->header('x-then'), 'exit 7', 'R78: ... it is the script\'s 486');
    (undef, undef, @r) = ask('ringcrash');
    is(codes(@r), '180 500', 'R78: crash after a 180: the 180 went out, then 500 as no final was sent');
    (undef, undef, @r) = ask('empty');
    is(codes(@r), '404', 'R78: exit 0 without output -> default action (INVITE to a local URI: 404)');
    (undef, undef, @r) = ask('empty', method => 'OPTIONS');
    is(codes(@r), '200', 'R78: exit 0 without output -> default action (OPTIONS: 200)');
    ok(@r && defined $r[-1]->header('allow'), 'R78: ... the server\'s built-in OPTIONS answer');
}

# ---- malformed or unknown actions
{
    my $mark = $t->log_mark;
    my (undef, undef, @r) = ask('unknownact');
    is(codes(@r), '486', 'unknown CGI-* action: ignored, the other actions are carried out');
    ok($t->wait_log($mark, qr/unknown action ignored: CGI-FROBNICATE/), 'unknown CGI-* action: logged');
    (undef, undef, @r) = ask('badproxy');
    is(codes(@r), '500', 'CGI-PROXY-REQUEST without SIP/2.0: malformed output -> 500');
    (undef, undef, @r) = ask('badcookie');
    is(codes(@r), '500', 'CGI-SET-COOKIE with a value that is not a token: malformed -> 500');
    (undef, undef, @r) = ask('badagain');
    is(codes(@r), '500', 'CGI-AGAIN neither yes nor no: malformed -> 500');
}

# ---- R75: a malformed request answered 400 does not run the script
{
    my $uac = $t->peer(name => 'uac-r75');
    my $raw = $t->sip_request(method => 'INVITE', uri => $t->local_uri('r75'), sock => $uac->sock,
                              headers => [ 'X-Good' => 'fine' ]);
    $raw =~ s/^X-Good: fine\r\n/This line is not a header\r\n/m;
    $uac->send($raw);
    my $r = $uac->expect(response => 1, final => 1, timeout => 3);
    is($r && $r->code, 400, 'R75: malformed INVITE -> 400 from the server');
    $uac->send($t->ack_for($raw, $r)) if $r;
    my $raw2 = $t->sip_request(method => 'MESSAGE', uri => $t->local_uri('r75'), sock => $uac->sock,
                               replace => { CSeq => 'abc' });
    $uac->send($raw2);
    $r = $uac->expect(response => 1, final => 1, timeout => 3);
    is($r && $r->code, 400, 'R75: malformed CSeq -> 400');
    sleep 0.5;
    is($t->nruns('r75@127.0.0.1'), 0, 'R75: the script did not run for messages answered 400');
}

$t->assert_no_zombies;
$t->dump_log_on_failure;
$t->stop;

# ---- SipMaxScripts (a limit per engine: one engine here, so that the three
# callers' requests meet in it whatever their source ports)
my $t2 = SipCgiTest->new(vhost_conf => 'SipMaxScripts 2', server_conf => 'SipEngines 1');
{
    $t2->cgi_script('slow@127.0.0.1', "sleep 1.5\nprintf 'SIP/2.0 486 Busy Here\\n\\n'");
    my @uac = map { $t2->peer(name => "uac-max$_") } 1 .. 3;
    my @inv;
    for my $i (0, 1) {
        push @inv, $uac[$i]->invite(uri => $t2->local_uri('slow'));
    }
    SipTest::wait_until(2, sub { $t2->nruns('slow@127.0.0.1') >= 2 });
    my $inv3 = $uac[2]->invite(uri => $t2->local_uri('slow'));
    my $f3 = $uac[2]->final_for($inv3, 1);
    is($f3 && $f3->code, 503, 'SipMaxScripts 2: a third concurrent request gets 503');
    like($f3 && $f3->header('retry-after') // '', qr/^\d+/, 'SipMaxScripts: with Retry-After');
    $uac[2]->ack($inv3, $f3) if $f3;
    for my $i (0, 1) {
        my $f = $uac[$i]->final_for($inv[$i], 4);
        is($f && $f->code, 486, "SipMaxScripts: running request " . ($i + 1) . " completes");
        $uac[$i]->ack($inv[$i], $f) if $f;
    }
    sleep 0.3;
    my $inv4 = $uac[2]->invite(uri => $t2->local_uri('slow'));
    my $f4 = $uac[2]->final_for($inv4, 4);
    is($f4 && $f4->code, 486, 'SipMaxScripts: once they ended, new requests run scripts again');
    $uac[2]->ack($inv4, $f4) if $f4;
    is($t2->nruns('slow@127.0.0.1'), 3, 'SipMaxScripts: the refused request ran no script');
}
$t2->dump_log_on_failure;
$t2->stop;
done_testing;
