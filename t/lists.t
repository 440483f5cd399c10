#!/usr/bin/perl
# Lists (issue 15 item 3; seed 002 §5.1): SipList / SipListFile name an
# address that stands for several members.  SipListMode redirect (the
# default) answers 300 with a Contact per member; proxy forks to every
# member in parallel (a member over TCP too), relays the first 200 and
# CANCELs the others; "Call-Disposition: all" gets the 300 whatever the
# mode; a member that is a registered user of ours reaches its contact
# (location service, not a request to ourselves); users that are no list
# are unaffected; SipListMaxMembers and a bad SipListFile line are
# configuration errors (apache2 -t) naming file and line.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use SipCgiTest qw(parse_msg rand_token);
use SipTest qw(free_port accept_on);

# ---- helpers

sub tcp_listener {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => free_port(), Proto => 'tcp',
                                  Listen => 5, ReuseAddr => 1) or die "listen: $!";
    return $l;
}

# A response to $req (SipTest::Msg) written on TCP socket $s.
sub tcp_reply {
    my ($t, $s, $req, $code, $reason, $tag) = @_;
    my $to = $req->header('to');
    $to .= ";tag=$tag" if $code > 100 && $to !~ /;\s*tag=/i;
    my $raw = "SIP/2.0 $code $reason\r\n"
        . join('', map { "Via: $_\r\n" } $req->headers('via'))
        . 'From: ' . $req->header('from') . "\r\nTo: $to\r\n"
        . 'Call-ID: ' . $req->header('call-id') . "\r\nCSeq: " . $req->header('cseq') . "\r\n"
        . "Content-Length: 0\r\n\r\n";
    $t->send_raw($s, $raw);
}

sub contacts {
    my ($m) = @_;
    return () unless $m;
    return sort map { /<([^>]+)>/ ? $1 : $_ } $m->header_elems('contact');
}

sub register {
    my ($t, $user, $contact) = @_;
    my $us = '127.0.0.1:' . $t->sip_port;
    my @x = $t->transact('udp', method => 'REGISTER', uri => "sip:$us", to => "<sip:$user\@$us>",
                         from => "<sip:$user\@$us>;tag=" . rand_token(6), call_id => rand_token(12) . '@reg',
                         cseq => 1, headers => [ Contact => "<$contact>" ]);
    return @x && $x[-1]->code == 200;
}

# ---- 1. redirect (the default): 300 with every member

my $t = SipCgiTest->new(start => 0);
my $port = $t->sip_port;
my $us = "127.0.0.1:$port";
my ($pa, $pb) = ($t->peer(name => 'a'), $t->peer(name => 'b'));
my $tl = tcp_listener();
my $c_uri = 'sip:c@127.0.0.1:' . $tl->sockport . ';transport=tcp';
my @team = ($pa->uri('a'), $pb->uri('b'), $c_uri);
open(my $lf, '>', $t->dir . '/conf/lists.txt') or die;
print $lf "# lists kept in a file\n\nhelp " . $pa->uri('h1') . "  " . $pb->uri('h2') . "   # two\n";
close $lf;
$t->{vhost_conf} = join("\n", "SipList team @team carol",
                        "SipList sales\@127.0.0.1 " . $pa->uri('s'),
                        'SipListFile @DIR@/conf/lists.txt',
                        'SipList many ' . join(' ', map { sprintf('sip:member-%02d-abcdefghijkl@192.0.2.1', $_) } 1 .. 40));
$t->start;

my $uac = $t->peer(name => 'uac');
my @want = sort(@team, "sip:carol\@$us");
for my $m (qw(INVITE OPTIONS MESSAGE)) {
    my $req = $uac->request(method => $m, uri => "sip:team\@$us");
    my $r = $uac->expect(call_id => $uac->call_id($req), final => 1, timeout => 3);
    is($r && $r->code, 300, "redirect mode: $m to the list -> 300");
    is_deeply([ contacts($r) ], \@want, '... with one Contact per member (a bare user at our host)');
    $uac->ack($req, $r) if $r && $m eq 'INVITE';
}
ok(!$pa->expect(method => 'INVITE', timeout => 0.5), '... and no member was called');
{
    my $req = $uac->invite(uri => "sip:Te%61m\@$us");
    my $r = $uac->final_for($req, 3);
    is($r && $r->code, 300, 'the name matches case-insensitively after %-decoding');
    $uac->ack($req, $r) if $r;
    $req = $uac->invite(uri => "sip:sales\@$us");
    $r = $uac->final_for($req, 3);
    is_deeply([ contacts($r) ], [ $pa->uri('s') ], 'a user@host list at its host');
    $uac->ack($req, $r) if $r;
    $req = $uac->invite(uri => "sip:help\@$us");
    $r = $uac->final_for($req, 3);
    is_deeply([ contacts($r) ], [ sort($pa->uri('h1'), $pb->uri('h2')) ], 'a list from SipListFile');
    $uac->ack($req, $r) if $r;
    $req = $uac->invite(uri => "sip:bob\@$us");
    $r = $uac->final_for($req, 3);
    is($r && $r->code, 404, 'a user that is no list is unaffected (404: never registered)');
    $uac->ack($req, $r) if $r;
    # BYE has no list handling: 404 like any BYE for a user nobody registered
    $req = $uac->request(method => 'BYE', uri => "sip:team\@$us");
    $r = $uac->expect(call_id => $uac->call_id($req), final => 1, timeout => 3);
    ok($r && $r->code != 300, 'BYE to the list is not redirected');
}
{
    # 40 members of 40 bytes: over UDP the 300 is cut to 1300 bytes (RFC 3261
    # §18.1.1) and says so; over TCP every member is listed
    my $req = $uac->invite(uri => "sip:many\@$us");
    my $r = $uac->final_for($req, 3);
    my @c = contacts($r);
    ok($r && $r->code == 300 && @c > 5 && @c < 40, 'a long list over UDP: 300 cut short') or diag(scalar @c);
    like($r ? $r->header('warning') // '' : '', qr/^399 .*cut to fit a UDP datagram/, '... with a Warning');
    ok($r && length($r->raw) <= 1300, '... within 1300 bytes');
    $uac->ack($req, $r) if $r;
    my @x = $t->transact('tcp', method => 'OPTIONS', uri => "sip:many\@$us");
    @c = contacts($x[-1]);
    is(scalar(@c), 40, '... over TCP every member is listed');
}
$t->stop;

# ---- 2. proxy: every member, the first 200 relayed, the others CANCELled

my $p = SipCgiTest->new(start => 0);
$port = $p->sip_port;
$us = "127.0.0.1:$port";
($pa, $pb) = ($p->peer(name => 'a'), $p->peer(name => 'b'));
my $pd = $p->peer(name => 'd');         # carol's phone
$tl = tcp_listener();
$c_uri = 'sip:c@127.0.0.1:' . $tl->sockport . ';transport=tcp';
$p->{vhost_conf} = join("\n", 'SipListMode proxy',
                        'SipList team ' . join(' ', $pa->uri('a'), $pb->uri('b'), $c_uri) . ' carol team');
$p->start;
ok(register($p, 'carol', $pd->uri('carol')), 'carol registers her phone');

$uac = $p->peer(name => 'uac');
{
    my $req = $uac->invite(uri => "sip:team\@$us", headers => [ 'Call-Disposition' => 'No-Forward, ALL' ]);
    my $r = $uac->final_for($req, 3);
    is($r && $r->code, 300, 'proxy mode: Call-Disposition: all -> 300 all the same');
    my @c = contacts($r);
    is(scalar(@c), 5, '... listing every member as written');
    $uac->ack($req, $r) if $r;
    ok(!$pa->expect(method => 'INVITE', timeout => 0.5), '... and no member was called');
}
my $mark = $p->log_mark;
my $inv = $uac->invite(uri => "sip:team\@$us");
my $cid = $uac->call_id($inv);
my $ia = $pa->expect(method => 'INVITE', call_id => $cid, timeout => 3);
my $ib = $pb->expect(method => 'INVITE', call_id => $cid, timeout => 3);
my $id = $pd->expect(method => 'INVITE', call_id => $cid, timeout => 3);
my $sc = accept_on($tl, 3);
my $ic = $sc ? $p->read_response($sc, 3) : undef;
ok($ia && $ib, 'both UDP members get the INVITE');
ok($ic && $ic->method eq 'INVITE' && $ic->header('call-id') eq $cid, 'the TCP member gets it over TCP');
ok($id, 'the member that is a registered user of ours reaches its contact');
is($id && $id->uri, $pd->uri('carol'), '... at the registered contact');
is($id && scalar(my @v = $id->header_elems('via')), 2, '... directly (one Via of ours, no trip through ourselves)');
ok(grep({ /list team: sip:team\@\S+ left out \(not registered; members are not expanded again\)/ }
        $p->log_since($mark)), 'the list inside itself is not expanded again (logged)');
# a CANCEL goes only to a branch that answered provisionally (RFC 3261 §9.1)
$pb->reply($ib, 180) if $ib;
$pd->reply($id, 180) if $id;
tcp_reply($p, $sc, $ic, 180, 'Ringing', 'tc') if $ic;
$pa->reply($ia, 180) if $ia;
my $ring = $uac->expect(call_id => $cid, code => 180, timeout => 3);
ok($ring, 'a member\'s 180 is relayed');
$pa->reply($ia, 200, body => "v=0\r\n", content_type => 'application/sdp') if $ia;
my $fin = $uac->final_for($inv, 3);
is($fin && $fin->code, 200, 'the first 200 reaches the caller');
my $cb = $pb->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
my $cd = $pd->expect(method => 'CANCEL', call_id => $cid, timeout => 3);
my $cc = $sc ? $p->read_response($sc, 3) : undef;
ok($cb && $cd, 'the other UDP members get CANCEL');
ok($cc && $cc->method eq 'CANCEL', 'the TCP member gets CANCEL over TCP');
for ([ $pb, $cb, $ib ], [ $pd, $cd, $id ]) {
    my ($peer, $can, $orig) = @$_;
    next unless $can && $orig;
    $peer->reply($can, 200);
    $peer->reply($orig, 487);
}
if ($cc) {
    tcp_reply($p, $sc, $cc, 200, 'OK', 'tc');
    tcp_reply($p, $sc, $ic, 487, 'Request Terminated', 'tc');
}
$uac->ack($inv, $fin) if $fin;
ok($pb->expect(method => 'ACK', call_id => $cid, timeout => 3), 'the 487 is ACKed');
ok(!$uac->expect(call_id => $cid, final => 1, timeout => 1), 'the caller gets no second final response');
$p->stop;

# ---- 3. SipListMaxMembers bounds the branches too (a member's contacts count)

{
    my $q = SipCgiTest->new(start => 0);
    my $qus = '127.0.0.1:' . $q->sip_port;
    my ($qa, $q1, $q2) = ($q->peer(name => 'qa'), $q->peer(name => 'q1'), $q->peer(name => 'q2'));
    $q->{vhost_conf} = join("\n", 'SipListMode proxy', 'SipListMaxMembers 2', 'SipList duo ' . $qa->uri('a') . ' erin');
    $q->start;
    my @x = $q->transact('udp', method => 'REGISTER', uri => "sip:$qus", to => "<sip:erin\@$qus>",
                         from => "<sip:erin\@$qus>;tag=q1", call_id => 'reg-erin@q', cseq => 1,
                         headers => [ Contact => '<' . $q1->uri('erin') . '>', Contact => '<' . $q2->uri('erin') . '>' ]);
    is(@x && $x[-1]->code, 200, 'erin registers two phones');
    my $qc = $q->peer(name => 'caller');
    my $qmark = $q->log_mark;
    my $qi = $qc->invite(uri => "sip:duo\@$qus");
    my $qcid = $qc->call_id($qi);
    my @got;
    for my $peer ($qa, $q1, $q2) {
        my $m = $peer->expect(method => 'INVITE', call_id => $qcid, timeout => 1.5);
        push @got, [ $peer, $m ] if $m;
    }
    is(scalar(@got), 2, 'SipListMaxMembers 2: a list whose member has two contacts forks to two branches');
    ok(grep({ /list duo: 1 target\(s\) left out \(SipListMaxMembers 2\)/ } $q->log_since($qmark)),
       '... the third is left out, logged');
    $_->[0]->reply($_->[1], 486) for @got;
    my $fin = $qc->final_for($qi, 3);
    is($fin && $fin->code, 486, '... and the best answer comes back');
    $qc->ack($qi, $fin) if $fin;
    $q->stop;
}

# ---- 4. configuration errors (apache2 -t)

{
    my $bad = SipCgiTest->new(start => 0, vhost_conf => join("\n", 'SipList big sip:a@x.test sip:b@x.test sip:c@x.test',
                                                             'SipListMaxMembers 2'));
    $bad->write_conf;
    my ($rc, $out) = $bad->_run_apache('-t');
    ok($rc != 0, 'a list over SipListMaxMembers is a configuration error');
    like($out, qr/httpd\.conf:\d+: list big has 3 members, more than SipListMaxMembers 2/, '... naming it and where');
}
{
    my $bad = SipCgiTest->new(start => 0);
    open(my $fh, '>', $bad->dir . '/conf/bad.txt') or die;
    print $fh "ok sip:a\@x.test\n# fine so far\nbroken tel:+123\n";
    close $fh;
    $bad->{vhost_conf} = 'SipListFile @DIR@/conf/bad.txt';
    $bad->write_conf;
    my ($rc, $out) = $bad->_run_apache('-t');
    ok($rc != 0, 'a bad SipListFile line is a configuration error');
    like($out, qr{bad\.txt:3: list broken: tel:\+123 is not a SIP URI}, '... with file:line');
}
{
    my $ok = SipCgiTest->new(start => 0, vhost_conf => 'SipList two sip:a@x.test sip:b@x.test');
    $ok->write_conf;
    my ($rc, $out) = $ok->_run_apache('-t');
    is($rc, 0, 'a list within the bound passes apache2 -t') or diag($out);
}
done_testing;
