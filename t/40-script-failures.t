#!/usr/bin/perl
# Misbehaving scripts: garbage, no output, crash, hang, runaway children,
# huge output.  All must yield 500, be logged, and leave no process behind.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg wait_until);

my $stderr_marker = 'STDERR-MARKER-' . SipTest::rand_token(10);

my $t = SipTest->new(
    vhost_conf => "SipScriptTimeout 2\nSipScriptMaxOutput 100000",
    scripts => {
        'garbage@127.0.0.1'  => "#!/bin/sh\necho 'hello world, this is not SIP'\n",
        'badcode@127.0.0.1'  => "#!/bin/sh\nprintf 'SIP/2.0 99 Too Small\\n\\n'\n",
        'silent@127.0.0.1'   => "#!/bin/sh\nexit 0\n",
        'ringonly@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 180 Ringing\\n\\n'\nexit 0\n",
        'segv@127.0.0.1'     => "#!/bin/sh\nkill -SEGV \$\$\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
        'sleeper@127.0.0.1'  => "#!/bin/sh\n/bin/sleep 60.4242\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
        'bgchild@127.0.0.1'  => "#!/bin/sh\n/bin/sleep 61.4343 &\nexit 0\n",
        'huge@127.0.0.1'     => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nContent-Type: text/plain\\n\\n'\n"
                              . "/usr/bin/yes | /usr/bin/head -c 5000001\n",
        'medium@127.0.0.1'   => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nContent-Type: text/plain\\n\\n'\n"
                              . "/usr/bin/yes 0123456789abcdefghi | /usr/bin/head -c 50000\n",
        'big@127.0.0.1'      => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nContent-Type: text/plain\\n\\n'\n"
                              . "/usr/bin/yes 0123456789abcdefghi | /usr/bin/head -c 150000\n",
        'stderr@127.0.0.1'   => "#!/bin/sh\necho \"$stderr_marker-\$SIP_CALL_ID\" >&2\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
    },
);
my $port = $t->sip_port;
my $engine = $t->engine_pid;
ok($engine, 'engine running');

sub call {
    my ($tr, $user, $method) = @_;
    my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
    my $req = $t->sip_request(method => $method // 'MESSAGE', transport => uc $tr, sock => $s,
                              uri => "sip:$user\@127.0.0.1:$port");
    my $t0 = time;
    my @r = $tr eq 'udp' ? $t->udp_req($req, 10, sock => $s) : $t->tcp_request($req, 10, sock => $s);
    my $el = time - $t0;
    if (@r && $r[-1]->is_final && ($method // '') eq 'INVITE') {
        my $ack = $t->ack_for($req, $r[-1]);
        $tr eq 'udp' ? $t->udp_send($ack, sock => $s) : $t->send_raw($s, $ack);
    }
    return ($el, $req, @r);
}

sub no_procs {
    my ($needle, $label) = @_;
    my @p;
    wait_until(3, sub { @p = $t->procs_matching($needle); !@p }, 0.1);
    ok(!@p, $label) or diag(join "\n", map { "$_->{pid} $_->{stat} $_->{cmd}" } @p);
}

for my $tr (qw(udp tcp)) {
    for my $case (
        [ 'garbage',  'script printing garbage' ],
        [ 'badcode',  'script printing an invalid status code' ],
        [ 'segv',     'script killed by SIGSEGV' ],
    ) {
        my ($user, $what) = @$case;
        my $mark = $t->log_mark;
        my ($el, $req, @r) = call($tr, $user);
        is(@r && $r[-1]->code, 500, "$tr: $what -> 500")
            or diag(@r ? $r[-1]->raw : 'no response');
        $t->check_mirrored($req, $r[-1], "$tr $user 500", src_port => undef) if @r;
        cmp_ok($el, '<', 2, "$tr: $what answered promptly (${\ sprintf '%.2f', $el}s)");
        ok($t->wait_log($mark, qr/\Q$user\E\@127\.0\.0\.1/, 3), "$tr: $what logged with the script name")
            or diag($t->log_since($mark));
    }

    # exit 0 without output: RFC 3050 §5.6.1.6 default action (no registrar:
    # 404 for a local user), not an error
    {
        my ($el, $req, @r) = call($tr, 'silent');
        is(@r && $r[-1]->code, 404, "$tr: script exiting 0 without output -> default action (404)")
            or diag(@r ? $r[-1]->raw : 'no response');
        cmp_ok($el, '<', 2, "$tr: silent script answered promptly");
    }

    # 180 then exit
    {
        my $mark = $t->log_mark;
        my ($el, $req, @r) = call($tr, 'ringonly', 'INVITE');
        my @codes = grep { $_ != 100 } map { $_->code } @r;
        is_deeply(\@codes, [180, 500], "$tr: script printing only 180 -> 180 then 500")
            or diag("got: @codes");
        ok($t->wait_log($mark, qr/ringonly\@127\.0\.0\.1/, 3), "$tr: ringonly failure logged");
    }

    # hang -> timeout
    {
        my $mark = $t->log_mark;
        my ($el, $req, @r) = call($tr, 'sleeper');
        is(@r && $r[-1]->code, 500, "$tr: hanging script -> 500");
        ok($el >= 1.5 && $el <= 4.5, "$tr: 500 after the 2 s SipScriptTimeout (took " . sprintf('%.2f', $el) . "s)");
        no_procs('sleep 60.4242', "$tr: no leftover sleep of the timed-out script");
        no_procs($t->scripts_dir . '/sleeper', "$tr: timed-out script process gone");
        $t->assert_no_zombies("$tr: no zombie after the timeout");
        ok($t->wait_log($mark, qr/sleeper\@127\.0\.0\.1/, 3), "$tr: timeout logged with the script name")
            or diag($t->log_since($mark));
    }

    # background child keeps stdout open
    {
        my $mark = $t->log_mark;
        my ($el, $req, @r) = call($tr, 'bgchild');
        is(@r && $r[-1]->code, 500, "$tr: script leaving a child holding stdout -> 500");
        cmp_ok($el, '<=', 4.5, "$tr: ... within the timeout (took " . sprintf('%.2f', $el) . "s)");
        no_procs('sleep 61.4343', "$tr: background child of the script killed");
        $t->assert_no_zombies("$tr: no zombie after the background-child case");
        ok($t->wait_log($mark, qr/bgchild\@127\.0\.0\.1/, 3), "$tr: bgchild failure logged");
    }

    # huge output
    {
        my $mark = $t->log_mark;
        my ($el, $req, @r) = call($tr, 'huge');
        is(@r && $r[-1]->code, 500, "$tr: output over SipScriptMaxOutput -> 500")
            or diag(@r ? substr($r[-1]->raw, 0, 300) : 'no response');
        no_procs('head -c 5000001', "$tr: huge-output pipeline gone");
        ok($t->wait_log($mark, qr/huge\@127\.0\.0\.1/, 3), "$tr: huge output logged");
        is($t->engine_pid, $engine, "$tr: engine survived huge output");
        ok($t->options_ok($tr), "$tr: server answers after huge output");
    }

    # configured SipScriptMaxOutput 100000
    {
        my ($el, $req, @r) = call($tr, 'medium');
        is(@r && $r[-1]->code, 200, "$tr: 50000-byte body under SipScriptMaxOutput 100000 -> 200");
        is(@r && length($r[-1]->body), 50000, "$tr: 50000-byte body relayed whole");
        my $mark = $t->log_mark;
        ($el, $req, @r) = call($tr, 'big');
        is(@r && $r[-1]->code, 500, "$tr: 150000-byte output over SipScriptMaxOutput 100000 -> 500");
        ok($t->wait_log($mark, qr/big\@127\.0\.0\.1/, 3), "$tr: over-limit output logged");
    }

    # stderr goes to the error log (10 runs: every line must arrive)
    {
        my $mark = $t->log_mark;
        my (@cids, $answered);
        for (1 .. 10) {
            my ($el, $req, @r) = call($tr, 'stderr');
            $answered++ if @r && $r[-1]->code == 200;
            push @cids, parse_msg($req)->header('call-id');
        }
        is($answered, 10, "$tr: script writing to stderr still answers 200 (10 runs)");
        my @missing;
        wait_until(3, sub {
            my $log = $t->log_since($mark);
            @missing = grep { index($log, "$stderr_marker-$_") < 0 } @cids;
            !@missing;
        }, 0.1);
        ok(!@missing, "$tr: script stderr copied to the error log (10 of 10 runs)")
            or diag(scalar(@missing) . " of 10 stderr lines missing from the error log");
    }
}

is($t->engine_pid, $engine, 'engine never restarted');
$t->assert_no_zombies;
$t->dump_log_on_failure;
$t->stop;
done_testing;
