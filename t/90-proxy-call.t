#!/usr/bin/perl
# Stateful proxy (RFC 3261 §16): a call INVITE/180/200/ACK/BYE/200 between a
# SIPp UAC and a SIPp UAS through mod_sip (SipProxyOutside On).  The UAC
# sends everything to the proxy (-rsa) with Request-URI
# sip:bob@127.0.0.1:<UAS port>; ACK and BYE follow the route set learnt from
# the proxy's Record-Route.  Over UDP, TCP, UDP in -> TCP out, without
# Record-Route, and over TCP from several UACs at once with several httpd
# children; also the callee hanging up (its BYE routed back to the UAC).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port);

SipTest::sipp_available() or do { done_testing; exit 1 };

my @servers;

# The proxy's Record-Route values, top first (RFC 5658: one per side when
# the transport changes), each with the dialog's From tag and a hash.
sub rr_expected {
    my ($in, $out) = @_;
    my @want = ($out eq 'TCP' ? ';transport=tcp' : '');
    push @want, ($in eq 'TCP' ? ';transport=tcp' : '') if $in ne $out;
    return @want;
}

sub rr_ok {
    my ($port, $in, $out, $ftag, @values) = @_;
    my @want = rr_expected($in, $out);
    my @got = map { split /\s*,\s*/ } @values;
    return 0 unless @got == @want;
    for my $i (0 .. $#want) {
        return 0 unless $got[$i] =~ /^<sip:127\.0\.0\.1:$port\Q$want[$i]\E;lr;ftag=\Q$ftag\E;rs=[0-9a-f]{16}>$/;
    }
    return 1;
}

# Checks on the transcripts of one UAC/UAS pair (or several UACs, one UAS).
#   uacs => [handles], uas => handle, calls => total, rr => 0|1,
#   in/out => 'UDP'|'TCP' (UAC -> proxy, proxy -> UAS), port => proxy port
sub check_transcripts {
    my ($label, %o) = @_;
    my ($uas, $port) = @o{qw(uas port)};
    my $proxy_via = qr{^SIP/2\.0/$o{out} 127\.0\.0\.1:$port;};
    my %uac_port = map { $_->{port} => $_ } @{ $o{uacs} };

    for my $m (qw(INVITE ACK BYE)) {
        my @reqs = SipTest::sipp_msgs($uas, dir => 'received', method => $m);
        my %cids = map { ($_->header('call-id') // '') => 1 } @reqs;
        is(scalar(keys %cids), $o{calls}, "$label: UAS received the $m of every call");
        my (@bad_via, @bad_mf, @bad_rr, @bad_route);
        for my $r (@reqs) {
            my @via = $r->header_elems('via');
            my $p = SipTest::Msg::params_of($via[0]);
            my ($uport) = ($via[1] // '') =~ m{^SIP/2\.0/\w+ 127\.0\.0\.1:(\d+)};
            push @bad_via, $r->head
                unless @via == 2 && $via[0] =~ $proxy_via && ($p->{branch} // '') =~ /^z9hG4bK./
                    && exists $p->{rport} && defined $uport && $uac_port{$uport};
            push @bad_mf, $r->head unless ($r->header('max-forwards') // '') eq '69';
            my @rr = $r->headers('record-route');
            if ($m eq 'INVITE') {
                push @bad_rr, $r->head
                    unless $o{rr} ? rr_ok($port, $o{in}, $o{out}, $r->from_tag // '', @rr) : !@rr;
            }
            # the proxy's own Route entry is consumed (§16.4), nothing else was there
            push @bad_route, $r->head if $r->headers('route');
        }
        ok(@reqs && !@bad_via, "$label: every $m at the UAS has 2 Vias, the top one the proxy's"
           . " ($o{out} 127.0.0.1:$port, z9hG4bK branch, rport), then the UAC's")
            or diag(join "\n--\n", @bad_via);
        ok(@reqs && !@bad_mf, "$label: every $m at the UAS has Max-Forwards 69 (UAC sent 70)")
            or diag(join "\n--\n", @bad_mf);
        ok(@reqs && !@bad_route, "$label: no Route header left in the $m at the UAS")
            or diag(join "\n--\n", @bad_route);
        if ($m eq 'INVITE') {
            ok(@reqs && !@bad_rr, $o{rr} ? "$label: INVITE at the UAS has exactly the proxy's Record-Route: "
                                           . join(', ', map { "<sip:127.0.0.1:$port$_;lr;ftag=..;rs=..>" }
                                                            rr_expected($o{in}, $o{out}))
                                         : "$label: INVITE at the UAS has no Record-Route (SipRecordRoute Off)")
                or diag(join "\n--\n", @bad_rr);
        }
    }

    my ($n100, $n180, $n200, @bad_uac, @bad_rr, @bad_body) = (0, 0, 0);
    for my $uac (@{ $o{uacs} }) {
        my $up = $uac->{port};
        for my $r (SipTest::sipp_msgs($uac, dir => 'received')) {
            next unless $r->is_response;
            my @via = $r->header_elems('via');
            push @bad_uac, $r->head unless @via == 1 && $via[0] =~ m{^SIP/2\.0/\w+ 127\.0\.0\.1:$up;};
            next unless ($r->header('cseq') // '') =~ /INVITE/;
            $n100++ if $r->code == 100;
            $n180++ if $r->code == 180;
            if ($r->code == 200) {
                $n200++;
                push @bad_body, $r->head . "\n\n" . $r->body unless $r->body =~ /^o=uas /m
                    && ($r->header('content-type') // '') eq 'application/sdp'
                    && ($r->header('content-length') // -1) == length(($r->body =~ s/(\r?\n)+\z/\r\n/r));
                my @rr = $r->headers('record-route');
                push @bad_rr, $r->head
                    unless $o{rr} ? rr_ok($port, $o{in}, $o{out}, $r->from_tag // '', @rr) : !@rr;
            }
        }
        # ACK and BYE were sent to the UAS Contact with the proxy's route
        for my $m (qw(ACK BYE)) {
            for my $r (SipTest::sipp_msgs($uac, dir => 'sent', method => $m)) {
                my @route = reverse map { split /\s*,\s*/ } $r->headers('route');
                push @bad_rr, $r->head
                    unless $o{rr} ? rr_ok($port, $o{in}, $o{out}, $r->from_tag // '', @route) : !@route;
            }
        }
    }
    ok(!@bad_body, "$label: the UAS's SDP body reached the UAC in the 200 (Content-Type, Content-Length intact)")
        or diag(join "\n--\n", @bad_body);
    ok(!@bad_uac, "$label: every response at the UAC has only the UAC's own Via")
        or diag(join "\n--\n", @bad_uac);
    cmp_ok($n100, '>=', $o{calls}, "$label: UAC got 100 Trying from the proxy for each INVITE");
    cmp_ok($n180, '>=', $o{calls}, "$label: UAC got the UAS's 180 for each INVITE");
    cmp_ok($n200, '>=', $o{calls}, "$label: UAC got the UAS's 200 for each INVITE");
    ok(!@bad_rr, $o{rr} ? "$label: route set from Record-Route used for ACK/BYE"
                        : "$label: no Record-Route in the 200, ACK/BYE without Route")
        or diag(join "\n--\n", @bad_rr);
}

# One UAS and one or more UACs; returns after the checks.
sub run_call {
    my ($t, $label, %o) = @_;
    my $n_uac = $o{uacs} // 1;
    my $m = $o{m} // 3;
    my $total = $m * $n_uac;
    my $uas = $t->sipp_start(name => "$label-uas", sf => 'proxy-uas-call.xml', m => $total,
                             d => 100, transport => $o{uas_tr});
    my @uacs;
    for my $i (1 .. $n_uac) {
        push @uacs, $t->sipp_start(name => "$label-uac$i", sf => 'proxy-uac-call.xml', m => $m, r => 10,
                                   transport => $o{uac_tr}, service => 'bob',
                                   remote => "127.0.0.1:$uas->{port}", rsa => '127.0.0.1:' . $t->sip_port,
                                   keys => { uri_params => $o{uri_params} // '' });
    }
    my $t0 = time;
    $t->sipp_ok($_, calls => $m) for @uacs;
    $t->sipp_ok($uas, calls => $total);
    note(sprintf "%s: %.1fs", $label, time - $t0);
    check_transcripts($label, uas => $uas, uacs => \@uacs, calls => $total, rr => $o{rr} // 1,
                      in => $o{uac_tr} =~ /^t/ ? 'TCP' : 'UDP', out => $o{out}, port => $t->sip_port);
}

# The callee hangs up: its BYE follows the Record-Route back through the
# proxy to the UAC's Contact.
sub run_callee_bye {
    my ($t, $label, %o) = @_;
    my $port = $t->sip_port;
    my $uas = $t->sipp_start(name => "$label-uas", sf => 'proxy-uas-callee-bye.xml', m => 1, d => 100,
                             transport => $o{uas_tr});
    my $uac = $t->sipp_start(name => "$label-uac", sf => 'proxy-uac-callee-bye.xml', m => 1,
                             transport => $o{uac_tr}, service => 'bob',
                             remote => "127.0.0.1:$uas->{port}", rsa => "127.0.0.1:$port",
                             keys => { uri_params => $o{uri_params} // '' });
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($uas, calls => 1);
    my ($sent) = SipTest::sipp_msgs($uas, dir => 'sent', method => 'BYE');
    my @byes = SipTest::sipp_msgs($uac, dir => 'received', method => 'BYE');
    ok($sent && rr_ok($port, $o{uac_tr} =~ /^t/ ? 'TCP' : 'UDP', $o{uas_tr} =~ /^t/ ? 'TCP' : 'UDP',
                      $sent->to_tag // '', $sent->headers('route')),
       "$label: the UAS sent its BYE with the proxy's Record-Route as Route") or diag($sent ? $sent->head : 'no BYE sent');
    ok(@byes, "$label: the UAC got the callee's BYE") or return;
    my @v = $byes[0]->header_elems('via');
    ok(@v == 2 && $v[0] =~ m{^SIP/2\.0/$o{back} 127\.0\.0\.1:$port;branch=z9hG4bK}
       && $v[1] =~ m{^SIP/2\.0/$o{uas_via} 127\.0\.0\.1:$uas->{port};},
       "$label: BYE at the UAC has the proxy's Via ($o{back}) on top of the UAS's") or diag($byes[0]->head);
    is($byes[0]->header('max-forwards'), '69', "$label: BYE at the UAC has Max-Forwards 69");
    ok(!$byes[0]->headers('route'), "$label: BYE at the UAC has no Route left");
    is($byes[0]->uri, $sent && $sent->uri, "$label: BYE Request-URI (the UAC Contact) unchanged");
    my @ok = grep { $_->code == 200 } SipTest::sipp_msgs($uas, dir => 'received');
    ok(@ok && scalar($ok[0]->header_elems('via')) == 1, "$label: the UAS got the UAC's 200 with only its own Via");
}

# ---- Record-Route on (default)
my $t = SipTest->new(vhost_conf => "SipProxyOutside On");
push @servers, $t;
run_call($t, 'udp',     uac_tr => 'u1', uas_tr => 'u1', out => 'UDP');
run_call($t, 'tcp',     uac_tr => 't1', uas_tr => 't1', out => 'TCP', uri_params => ';transport=tcp');
run_call($t, 'udp2tcp', uac_tr => 'u1', uas_tr => 't1', out => 'TCP', uri_params => ';transport=tcp');
run_callee_bye($t, 'callee-bye-udp', uac_tr => 'u1', uas_tr => 'u1', back => 'UDP', uas_via => 'UDP');
run_callee_bye($t, 'callee-bye-tcp', uac_tr => 't1', uas_tr => 't1', back => 'TCP', uas_via => 'TCP',
               uri_params => ';transport=tcp');
run_callee_bye($t, 'callee-bye-udp2tcp', uac_tr => 'u1', uas_tr => 't1', back => 'UDP', uas_via => 'TCP',
               uri_params => ';transport=tcp');
ok($t->options_ok('udp'), 'server still answers after the calls');
$t->dump_log_on_failure;
$t->stop;

# ---- SipRecordRoute Off
my $t2 = SipTest->new(vhost_conf => "SipProxyOutside On\nSipRecordRoute Off");
push @servers, $t2;
run_call($t2, 'norr', uac_tr => 'u1', uas_tr => 'u1', out => 'UDP', rr => 0, m => 2);
$t2->dump_log_on_failure;
$t2->stop;

# ---- several httpd children, TCP from several UACs in parallel
my $t3 = SipTest->new(vhost_conf => "SipProxyOutside On",
                      server_conf => "StartServers 3\nServerLimit 4\nThreadsPerChild 4\n"
                                   . "MaxRequestWorkers 16\nMinSpareThreads 4\nMaxSpareThreads 16\n");
push @servers, $t3;
my $engine = $t3->engine_pid;
my @children;
SipTest::wait_until(5, sub {
    my $root = $t3->httpd_pid;
    @children = grep { $_->{ppid} == ($root // -1) && $_->{pid} != ($engine // -1) && $_->{stat} ne 'Z' }
        SipTest::procs();
    @children >= 3;
});
cmp_ok(scalar(@children), '>=', 3, 'httpd runs at least 3 MPM children (StartServers 3)');
run_call($t3, 'par-tcp', uacs => 4, m => 3, uac_tr => 't1', uas_tr => 't1', out => 'TCP',
         uri_params => ';transport=tcp');
run_call($t3, 'par-udp2tcp', uacs => 3, m => 3, uac_tr => 'u1', uas_tr => 't1', out => 'TCP',
         uri_params => ';transport=tcp');
$t3->dump_log_on_failure;
$t3->stop;

done_testing;
