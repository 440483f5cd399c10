#!/usr/bin/perl
# Response processing of the forking proxy (RFC 3261 §16.7) with raw UDP
# sockets as UAC and UASs: a SIP-CGI script forks an INVITE to two sockets,
# the test answers from each and checks what the UAC gets: every 2xx, the
# best final response (lowest class, 503 -> 500), aggregated 401/407
# challenges, provisional responses (not 100) relayed, CANCEL of the other
# branch after a 2xx, hop-by-hop ACK of non-2xx finals.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port parse_msg rand_token);

my $t = SipTest->new(scripts => { 'fork@127.0.0.1' => "#!/bin/sh\nexit 0\n" });
my $port = $t->sip_port;

sub new_uas {
    my ($name) = @_;
    my $p = free_port();
    return { name => $name, port => $p, sock => $t->udp_socket(port => $p), uri => "sip:$name\@127.0.0.1:$p" };
}

sub set_targets {
    my (@uas) = @_;
    my $out = join '', map { "CGI-PROXY-REQUEST $_->{uri} SIP/2.0\\n\\n" } @uas;
    $t->write_script('fork@127.0.0.1', text => "#!/bin/sh\nprintf '$out'\n");
}

# Next request with method $m at a UAS (other datagrams are kept aside).
sub uas_wait {
    my ($u, $m, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($u->{sock}, $left) // last;
        my $msg = parse_msg($d);
        push @{ $u->{seen} }, $msg;
        return $msg if !$msg->is_response && ($msg->method // '') eq $m;
    }
    return undef;
}

# A response from a UAS to request $req (all Vias copied, To tag added).
sub uas_respond {
    my ($u, $req, $code, $reason, @extra) = @_;
    $u->{tag} //= 'uas' . rand_token(6);
    my $to = $req->header('to');
    $to .= ";tag=$u->{tag}" unless $to =~ /;\s*tag=/i || $code == 100;
    my $msg = "SIP/2.0 $code $reason\r\n"
        . join('', map { "Via: $_\r\n" } $req->headers('via'))
        . "From: " . $req->header('from') . "\r\n"
        . "To: $to\r\n"
        . "Call-ID: " . $req->header('call-id') . "\r\n"
        . "CSeq: " . $req->header('cseq') . "\r\n"
        . join('', map { "$_\r\n" } @extra)
        . "Content-Length: 0\r\n\r\n";
    $t->udp_send($msg, sock => $u->{sock}, port => $port);
}

# The UAC: INVITE to the fork script from a fresh socket.
sub uac_invite {
    my $s = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', sock => $s, uri => "sip:fork\@127.0.0.1:$port",
                              call_id => 'resp-' . rand_token(10) . '@127.0.0.1',
                              headers => [ Contact => "<sip:uac\@127.0.0.1:" . $s->sockport . ">" ]);
    $t->udp_send($raw, sock => $s);
    return ($s, $raw);
}

# Everything the UAC gets during $secs seconds, parsed.
sub uac_collect { my ($s, $secs) = @_; return map { parse_msg($_->[1]) } $t->udp_collect($s, $secs) }

# Final responses to the INVITE, retransmissions (same code and To tag) folded.
sub finals {
    my %seen;
    return grep { $_->is_final && ($_->header('cseq') // '') =~ /INVITE/
                  && !$seen{ $_->code . '|' . ($_->to_tag // '') }++ } @_;
}
sub codes { return join ' ', map { $_->code } @_ }

# ---- both branches answer 200: both 200s go up (two dialogs); the proxy does
#      not ACK a 2xx itself
{
    my ($a, $b) = (new_uas('two1'), new_uas('two2'));
    set_targets($a, $b);
    my ($s, $raw) = uac_invite();
    my $ia = uas_wait($a, 'INVITE');
    my $ib = uas_wait($b, 'INVITE');
    ok($ia && $ib, '200+200: both branches got the INVITE') or BAIL_OUT('fork script not working');
    uas_respond($a, $ia, 200, 'OK', "Contact: <$a->{uri}>");
    uas_respond($b, $ib, 200, 'OK', "Contact: <$b->{uri}>");
    my @r = uac_collect($s, 1.5);
    my @ok = grep { $_->code == 200 } finals(@r);
    my %tags = map { ($_->to_tag // '') => 1 } @ok;
    is(scalar(keys %tags), 2, '200+200: UAC got both 200s (two To tags)') or diag('UAC got: ' . codes(@r));
    ok(!grep({ $_->code != 200 } finals(@r)), '200+200: no other final response');
    my @acks = grep { ($_->method // '') eq 'ACK' } map { @{ $_->{seen} || [] } } $a, $b;
    push @acks, grep { ($_->method // '') eq 'ACK' } map { parse_msg($_->[1]) } map { $t->udp_collect($_->{sock}, 0.3) } $a, $b;
    is(scalar(@acks), 0, '200+200: the proxy sent no ACK for the 2xx itself');
    $t->udp_drain($s);
}

# ---- one rings, the other answers 200: the ringing branch is CANCELled and
#      its 487 does not reach the UAC
{
    my ($r, $o) = (new_uas('ring1'), new_uas('ok1'));
    set_targets($r, $o);
    my ($s, $raw) = uac_invite();
    my $ir = uas_wait($r, 'INVITE');
    my $io = uas_wait($o, 'INVITE');
    uas_respond($r, $ir, 180, 'Ringing');
    sleep 0.2;
    uas_respond($o, $io, 200, 'OK', "Contact: <$o->{uri}>");
    my $c = uas_wait($r, 'CANCEL', 3);
    ok($c, '180+200: the ringing branch got a CANCEL after the 200');
    if ($c) {
        uas_respond($r, $c, 200, 'OK');
        uas_respond($r, $ir, 487, 'Request Terminated');
        my $ack = uas_wait($r, 'ACK', 3);
        ok($ack, '180+200: the proxy ACKed the 487 of the cancelled branch');
    }
    my @r = uac_collect($s, 1);
    is_deeply([ map { $_->code } finals(@r) ], [200], '180+200: UAC got the 200 only (no 487)')
        or diag('UAC got: ' . codes(@r));
    ok(scalar(grep { $_->code == 180 } @r), '180+200: UAC got the 180');
}

# ---- the only branch sends 100 then 183 then 503: the UAC gets the proxy's
#      own 100, the 183 (not the branch's 100), and 500 instead of 503
{
    my $u = new_uas('svc1');
    set_targets($u);
    my ($s, $raw) = uac_invite();
    my $i = uas_wait($u, 'INVITE');
    uas_respond($u, $i, 100, 'Trying');
    uas_respond($u, $i, 183, 'Session Progress');
    sleep 0.2;
    uas_respond($u, $i, 503, 'Service Unavailable', 'Retry-After: 60');
    my $ack = uas_wait($u, 'ACK', 3);
    ok($ack, '503: the proxy ACKed the 503');
    if ($ack) {
        my @v = $ack->header_elems('via');
        my ($iv) = $i->header_elems('via');
        ok(@v == 1 && SipTest::Msg::params_of($v[0])->{branch} eq SipTest::Msg::params_of($iv)->{branch},
           '503: hop-by-hop ACK with the INVITE branch and one Via');
    }
    my @r = uac_collect($s, 1);
    is(scalar(grep { $_->code == 100 } @r), 1, '100 from the branch is not relayed (the UAC gets one 100, the proxy\'s)');
    is(scalar(grep { $_->code == 183 } @r), 1, '183 relayed to the UAC');
    is_deeply([ map { $_->code } finals(@r) ], [500], 'a lone 503 goes up as 500') or diag('UAC got: ' . codes(@r));
    $t->udp_send($t->ack_for($raw, (finals(@r))[0]), sock => $s) if finals(@r);
}

# ---- 486 and 302: the lowest class wins
{
    my ($a, $b) = (new_uas('busy9'), new_uas('moved9'));
    set_targets($a, $b);
    my ($s, $raw) = uac_invite();
    my $ia = uas_wait($a, 'INVITE');
    my $ib = uas_wait($b, 'INVITE');
    uas_respond($a, $ia, 486, 'Busy Here');
    sleep 0.2;
    uas_respond($b, $ib, 302, 'Moved Temporarily', 'Contact: <sip:elsewhere@127.0.0.1:9>');
    uas_wait($_, 'ACK', 2) for $a, $b;
    my @r = uac_collect($s, 1);
    my @f = finals(@r);
    is_deeply([ map { $_->code } @f ], [302], '486+302: UAC got 302 (lowest class)') or diag('UAC got: ' . codes(@r));
    is(@f ? $f[0]->header('contact') : undef, '<sip:elsewhere@127.0.0.1:9>', '486+302: the 302 keeps its Contact');
    $t->udp_send($t->ack_for($raw, $f[0]), sock => $s) if @f;
}

# ---- 401 and 407: one challenge response goes up carrying both challenges
{
    my ($a, $b) = (new_uas('auth1'), new_uas('auth2'));
    set_targets($a, $b);
    my ($s, $raw) = uac_invite();
    my $ia = uas_wait($a, 'INVITE');
    my $ib = uas_wait($b, 'INVITE');
    uas_respond($a, $ia, 401, 'Unauthorized', 'WWW-Authenticate: Digest realm="alpha", nonce="n1", algorithm=MD5');
    sleep 0.2;
    uas_respond($b, $ib, 407, 'Proxy Authentication Required',
                'Proxy-Authenticate: Digest realm="beta", nonce="n2", algorithm=MD5');
    uas_wait($_, 'ACK', 2) for $a, $b;
    my @r = uac_collect($s, 1);
    my @f = finals(@r);
    ok(@f == 1 && ($f[0]->code == 401 || $f[0]->code == 407), '401+407: UAC got one 401/407') or diag('UAC got: ' . codes(@r));
    if (@f) {
        my @www = $f[0]->headers('www-authenticate');
        my @pxy = $f[0]->headers('proxy-authenticate');
        ok(scalar(grep { /realm="alpha"/ } @www), '401+407: WWW-Authenticate of the 401 branch is there') or diag($f[0]->head);
        ok(scalar(grep { /realm="beta"/ } @pxy), '401+407: Proxy-Authenticate of the 407 branch is there') or diag($f[0]->head);
        $t->udp_send($t->ack_for($raw, $f[0]), sock => $s);
    }
}

# ---- two 401s: both WWW-Authenticate values aggregated
{
    my ($a, $b) = (new_uas('auth3'), new_uas('auth4'));
    set_targets($a, $b);
    my ($s, $raw) = uac_invite();
    my $ia = uas_wait($a, 'INVITE');
    my $ib = uas_wait($b, 'INVITE');
    uas_respond($a, $ia, 401, 'Unauthorized', 'WWW-Authenticate: Digest realm="gamma", nonce="n3"');
    uas_respond($b, $ib, 401, 'Unauthorized', 'WWW-Authenticate: Digest realm="delta", nonce="n4"');
    uas_wait($_, 'ACK', 2) for $a, $b;
    my @f = finals(uac_collect($s, 1));
    is(@f ? $f[0]->code : 0, 401, '401+401: UAC got 401');
    my @www = @f ? $f[0]->headers('www-authenticate') : ();
    ok((grep { /gamma/ } @www) && (grep { /delta/ } @www), '401+401: both WWW-Authenticate challenges in the 401')
        or diag(@f ? $f[0]->head : 'no final');
    $t->udp_send($t->ack_for($raw, $f[0]), sock => $s) if @f;
}

# ---- 603 from one branch, the other (ringing) is cancelled but answers 200
#      anyway (race): the 2xx goes up (§16.7 step 5), the 603 does not
{
    my ($d, $r) = (new_uas('decl10'), new_uas('race10'));
    set_targets($d, $r);
    my ($s, $raw) = uac_invite();
    my $id = uas_wait($d, 'INVITE');
    my $ir = uas_wait($r, 'INVITE');
    uas_respond($r, $ir, 180, 'Ringing');
    sleep 0.2;
    uas_respond($d, $id, 603, 'Decline');
    my $c = uas_wait($r, 'CANCEL', 3);
    ok($c, '603 + race: the ringing branch got a CANCEL after the 603');
    if ($c) {
        uas_respond($r, $ir, 200, 'OK', "Contact: <$r->{uri}>");   # answered before it saw the CANCEL
        uas_respond($r, $c, 200, 'OK');
    }
    my @f = finals(uac_collect($s, 1.5));
    is_deeply([ map { $_->code } @f ], [200], '603 + race: UAC got the 200 (and not the 603)')
        or diag('UAC got: ' . codes(@f));
}

# ---- the UAC cancels, the branch answers 200 anyway (race): the 2xx goes up
{
    my $r = new_uas('race11');
    set_targets($r);
    my ($s, $raw) = uac_invite();
    my $ir = uas_wait($r, 'INVITE');
    uas_respond($r, $ir, 180, 'Ringing');
    my @p = uac_collect($s, 0.3);
    (my $cancel = $raw) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^CSeq: 1 INVITE/CSeq: 1 CANCEL/m;
    $cancel =~ s/^Contact:[^\n]*\n//mi;
    $t->udp_send($cancel, sock => $s);
    my $c = uas_wait($r, 'CANCEL', 3);
    ok($c, 'CANCEL + race: the branch got the CANCEL');
    uas_respond($r, $ir, 200, 'OK', "Contact: <$r->{uri}>");
    uas_respond($r, $c, 200, 'OK') if $c;
    my @all = uac_collect($s, 1.5);
    ok(scalar(grep { $_->code == 200 && $_->header('cseq') =~ /CANCEL/ } @all), 'CANCEL + race: UAC got 200 for its CANCEL');
    is_deeply([ map { $_->code } finals(@all) ], [200], 'CANCEL + race: UAC got the 200 for the INVITE')
        or diag('UAC got: ' . codes(@all));
}

ok($t->options_ok('udp'), 'server still answers');
$t->dump_log_on_failure;
$t->stop;

# ---- Timer C: a branch that never sent a provisional ends as 408 when
#      Timer C fires; if it answers 200 after that, the 2xx must still reach
#      the UAC (§16.7 step 5: every 2xx to an INVITE is forwarded, also
#      after a final response was sent)
$t = SipTest->new(scripts => { 'fork@127.0.0.1' => "#!/bin/sh\nexit 0\n" }, vhost_conf => 'SipProxyTimerC 2');
$port = $t->sip_port;
{
    my $u = new_uas('late12');
    set_targets($u);
    my $t0 = time;
    my ($s, $raw) = uac_invite();
    my $i = uas_wait($u, 'INVITE');
    my @f = finals(uac_collect($s, 3));
    is_deeply([ map { $_->code } @f ], [408], 'Timer C, no provisional: UAC got 408') or diag('UAC got: ' . codes(@f));
    $t->udp_send($t->ack_for($raw, $f[0]), sock => $s) if @f;
    $t->udp_drain($u->{sock});
    uas_respond($u, $i, 200, 'OK', "Contact: <$u->{uri}>");
    my @late = finals(uac_collect($s, 1.5));
    is_deeply([ map { $_->code } @late ], [200], 'Timer C, no provisional: a late 200 from the branch still reaches the UAC')
        or diag(sprintf("200 sent by the UAS %.1fs after the INVITE; UAC got: %s", time - $t0, codes(@late)));
}
ok($t->options_ok('udp'), 'server still answers');
$t->dump_log_on_failure;
$t->stop;
done_testing;
