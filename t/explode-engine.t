#!/usr/bin/perl
# The URI-list service in the engine (issue 14, sip_explode_run.c), black
# box: an EXPLODE (draft-camarillo-sipping-exploders-solution-00, the X1
# scenario of the spec) over UDP and TCP is challenged (401) before
# anything leaves, then answered 200 at once and fanned out as exactly one
# MESSAGE per target, each to the target's registered device (raw UDP
# peers); a target without consent gives 470 with Permission-Missing and
# no request at all; SipExplodeRate refuses the explosion past the limit
# with 403; SipExplode Off answers 405 without EXPLODE in Allow (and 420
# for a recipient-list MESSAGE); an RFC 5365 MESSAGE gets 202; the
# mod_status counters move by exactly that; a 30-target explosion where
# one device never answers logs its line once timer F ended that request
# (=408), and the engine carries on; a 100-target explosion is timed.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use SipCgiTest qw(parse_msg);
use SipDigest qw(digest_challenge digest_credentials write_htdigest);

my $realm = 'explode.test';
my %pw = (alice => 'wonderland', carol => 'carolpw', dora => 'dorapw');

my $t = SipCgiTest->new(
    server_conf => join("\n",
        "LoadModule authn_core_module $SipTest::MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $SipTest::MODDIR/mod_authn_file.so",
        "LoadModule status_module $SipTest::MODDIR/mod_status.so",
        '<Location /server-status>', '    SetHandler server-status', '</Location>', ''),
    # no SipAuth: only the URI-list service demands a user (RFC 5363 §5.2)
    vhost_conf => join("\n",
        'SipExplodeConsentFile @DIR@/consent.txt',
        'SipExplodeRate 4',
        '<Location "/">', "    AuthName \"$realm\"", '    AuthUserFile @DIR@/users.htdigest',
        '    SipExplode On', '</Location>',
        '<Location "/closed@127.0.0.1">', '    SipExplode Off', '</Location>', ''),
    setup => sub {
        my ($self) = @_;
        write_htdigest($self->dir . '/users.htdigest', $realm, %pw);
        open(my $fh, '>', $self->dir . '/consent.txt') or die $!;
        print $fh "# target                invokers\n",
                  "sip:bill\@127.0.0.1      alice\n",
                  "sip:joe\@127.0.0.1       alice\n",
                  "sip:ted\@127.0.0.1       alice carol\n",
                  "sip:bob\@127.0.0.1       *\n",
                  "sip:u*\@127.0.0.1        alice dora\n",
                  "sip:slow\@127.0.0.1      alice dora\n";
        close $fh;
        chmod 0644, $self->dir . '/consent.txt';
    });
my $port = $t->sip_port;
my $us = "127.0.0.1:$port";
my $engine = $t->engine_pid;

# ---- helpers

sub register {
    my ($user, $contact) = @_;
    my @r = $t->transact('udp', method => 'REGISTER', uri => "sip:$us", to => "<sip:$user\@$us>",
                         from => "<sip:$user\@$us>;tag=r$user", call_id => "reg-$user-" . rand(),
                         headers => [ Contact => "<$contact>", Expires => 600 ]);
    return @r && $r[-1]->code == 200;
}

# The X1 body: a message/sipfrag template and a resource list.
sub x1_body {
    my (@targets) = @_;
    my $text = "Hi all.";
    my $frag = "MESSAGE sip:anyone.invalid SIP/2.0\r\nContent-Type: text/plain\r\n"
             . 'Content-Length: ' . length($text) . "\r\n\r\n$text";
    my $xml = qq{<?xml version="1.0" encoding="UTF-8"?>\n}
            . qq{<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\n <list>\n}
            . join('', map { qq{  <entry uri="$_"/>\n} } @targets) . " </list>\n</resource-lists>\n";
    return "--b42\r\nContent-Type: message/sipfrag\r\nContent-Disposition: template\r\n\r\n$frag\r\n"
         . "--b42\r\nContent-Type: application/resource-lists+xml\r\n"
         . "Content-ID: <lst1\@client.example.org>\r\n\r\n$xml\r\n--b42--\r\n";
}

my $XURI = "sip:exploder\@$us;list=cid:lst1%40client.example.org";
my %challenge;     # user -> the last challenge (nonce-counts keep it usable)

# Send one EXPLODE as 'user' (undef: without credentials) over 'tr';
# returns the final response.  A 401 is answered once with credentials.
sub explode {
    my (%o) = @_;
    my $tr = $o{tr} // 'udp';
    my $uri = $o{uri} // $XURI;
    my $method = $o{method} // 'EXPLODE';
    my $body = $o{body} // x1_body(@{ $o{targets} });
    my $sock = $tr eq 'tcp' ? $t->tcp_connect : $t->udp_socket;
    my %a = (method => $method, uri => $uri, sock => $sock, body => $body,
             content_type => 'multipart/mixed;boundary=b42',
             from => '<sip:' . ($o{user} // 'alice') . "\@$us>;tag=" . int(rand(1e9)),
             call_id => $o{call_id} // 'x' . int(rand(1e12)) . '@test', timeout => 5);
    my @extra = @{ $o{headers} || [] };
    my $cred = sub {
        digest_credentials(challenge => $challenge{ $o{user} }, user => $o{user},
                           password => $pw{ $o{user} }, method => $method, uri => $uri) };
    my @r = $t->transact($tr, %a, cseq => 1,
                         headers => [ @extra, ($o{user} && $challenge{ $o{user} }
                                               ? (Authorization => $cred->()) : ()) ]);
    return $r[-1] unless $o{user} && @r && $r[-1]->code == 401;
    $challenge{ $o{user} } = digest_challenge($r[-1], 'www-authenticate');
    @r = $t->transact($tr, %a, cseq => 2, headers => [ @extra, Authorization => $cred->() ]);
    return $r[-1];
}

# Every MESSAGE that reaches 'peer' within 'secs' (after the first, up to
# 'want' of them), each answered 'code' (undef: never); unique Call-IDs.
sub gather {
    my ($peer, %o) = @_;
    my $end = time + ($o{secs} // 3);
    my (%seen, @got);
    while (time < $end && (!$o{want} || @got < $o{want})) {
        my $m = $peer->expect(method => 'MESSAGE', timeout => $end - time) or last;
        $peer->reply($m, $o{code}) if defined $o{code} && !($o{silent} && $o{silent}->($m));
        push @got, $m unless $seen{ $m->header('call-id') }++;
    }
    # and nothing more for a moment (answering retransmissions too)
    for my $m ($peer->all(method => 'MESSAGE', wait => $o{quiet} // 0)) { }
    return @got;
}

sub stats {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->http_port,
                                  Proto => 'tcp', Timeout => 5) or return {};
    print $s "GET /server-status?auto HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $buf = '';
    while ($sel->can_read(5)) { my $n = sysread($s, my $b, 65536) or last; $buf .= $b }
    return { $buf =~ /^(Sip\w+): (\d+)\r?$/mg };
}

# ---- set-up: four users of ours, each with one device (a raw UDP peer)

my %peer;
for my $u (qw(bill joe ted bob eve)) {
    $peer{$u} = $t->peer(name => $u);
    ok(register($u, $peer{$u}->uri($u)), "$u registers a device");
}
my @x1 = map { "sip:$_\@$us" } qw(bill joe ted bob);
my $s0 = stats();
ok(defined $s0->{SipExplosions}, 'mod_status shows SipExplosions')
    or diag(join ', ', sort keys %$s0);
my ($explosions, $requests, $refused, $consent) = (0, 0, 0, 0);

# ---- X1 / X5 over UDP and TCP

for my $tr (qw(udp tcp)) {
    %challenge = ();
    $peer{$_}->forget for keys %peer;
    my $r = explode(tr => $tr, targets => \@x1);
    is($r && $r->code, 401, "$tr: EXPLODE without credentials -> 401 (EX-7)");
    my @leak = map { $peer{$_}->all(method => 'MESSAGE', wait => $_ eq 'bill' ? 1 : 0) } keys %peer;
    is(scalar @leak, 0, "$tr: ... and no request left for anyone");

    my $mark = $t->log_mark;
    my $t0 = time;
    $r = explode(tr => $tr, user => 'alice', targets => \@x1);
    is($r && $r->code, 200, "$tr: with alice's credentials -> 200 (EX-14)");
    ok(time - $t0 < 2, "$tr: ... at once, not after the fan-out");
    $explosions++;
    for my $u (qw(bill joe ted bob)) {
        my @m = gather($peer{$u}, want => 1, secs => 5, code => 200);
        is(scalar @m, 1, "$tr: ${u}'s device gets one MESSAGE") or next;
        my $m = $m[0];
        $requests++;
        is($m->uri, $peer{$u}->uri($u), "$tr: ... to the registered contact");
        like($m->header('to'), qr/<?sip:\Q$u\E\@\Q$us\E>?/, "$tr: ... To is the target");
        like($m->header('from'), qr/^<sip:alice\@\Q$us\E>;tag=\S+/, "$tr: ... From is alice, new tag");
        is($m->body, 'Hi all.', "$tr: ... with the template's body");
        like($m->header('content-type') // '', qr{^text/plain}i, "$tr: ... as text/plain");
        unlike($m->header('call-id') // '', qr/^x\d+\@test$/, "$tr: ... a Call-ID of its own");
    }
    my @more = map { $peer{$_}->all(method => 'MESSAGE', wait => $_ eq 'eve' ? 1 : 0) } 'eve';
    is(scalar @more, 0, "$tr: eve, not listed, gets nothing");
    my $line = $t->wait_log($mark, qr/sip explode: alice sip:alice\@127\.0\.0\.1 MESSAGE/, 5);
    like($line, qr/4 targets.*sip:bill\@\Q$us\E=200.*sip:bob\@\Q$us\E=200/,
         "$tr: one log line with each target's final status (EX-25)") or diag($line);
}

# ---- X6: a target without consent: 470, nothing sent (EX-9, EX-10)

{
    $peer{$_}->forget for keys %peer;
    my $r = explode(user => 'alice', targets => [ @x1, "sip:eve\@$us" ]);
    is($r && $r->code, 470, '470 when eve has not consented');
    is($r && $r->header('permission-missing'), "<sip:eve\@$us>", '... Permission-Missing names her');
    my @leak = map { $peer{$_}->all(method => 'MESSAGE', wait => $_ eq 'bill' ? 1.5 : 0) } keys %peer;
    is(scalar @leak, 0, '... and nobody gets anything');
    $consent++;
    # carol: only ted and bob accept from her
    $r = explode(user => 'carol', targets => \@x1);
    is($r && $r->code, 470, 'carol: bill and joe do not accept her');
    my @pm = split /\s*,\s*/, ($r && $r->header('permission-missing')) // '';
    is_deeply([ sort @pm ], [ sort "<sip:bill\@$us>", "<sip:joe\@$us>" ],
              '... Permission-Missing lists both');
    $consent++;
}

# ---- SipExplode Off (EX-15), an RFC 5365 MESSAGE (EX-26)

{
    my $r = explode(user => 'alice', uri => "sip:closed\@$us;list=cid:lst1%40client.example.org",
                    targets => \@x1);
    is($r && $r->code, 405, 'SipExplode Off -> 405');
    unlike(($r && $r->header('allow')) // '', qr/EXPLODE/, '... Allow without EXPLODE');
    like(($r && $r->header('allow')) // '', qr/MESSAGE/, '... but with the others');
    my $xml = qq{<?xml version="1.0" encoding="UTF-8"?>\n}
            . qq{<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists" }
            . qq{xmlns:cp="urn:ietf:params:xml:ns:copycontrol"><list>\n}
            . join('', map { qq{<entry uri="$_" cp:copyControl="to"/>\n} } @x1[0, 1]) . "</list></resource-lists>\n";
    my $body = "--b42\r\nContent-Type: text/plain\r\n\r\nHello list.\r\n"
             . "--b42\r\nContent-Type: application/resource-lists+xml\r\n"
             . "Content-Disposition: recipient-list\r\n\r\n$xml\r\n--b42--\r\n";
    $r = explode(user => 'alice', method => 'MESSAGE', uri => "sip:closed\@$us", body => $body,
                 headers => [ Require => 'recipient-list-message' ]);
    is($r && $r->code, 420, 'recipient-list MESSAGE where SipExplode is Off -> 420');
    like(($r && $r->header('unsupported')) // '', qr/recipient-list-message/, '... Unsupported names it');
    $peer{$_}->forget for keys %peer;
    $r = explode(user => 'alice', method => 'MESSAGE', uri => "sip:list-service\@$us", body => $body,
                 headers => [ Require => 'recipient-list-message' ]);
    is($r && $r->code, 202, 'recipient-list MESSAGE -> 202 (RFC 5365)');
    $explosions++;
    for my $u (qw(bill joe)) {
        my @m = gather($peer{$u}, want => 1, secs => 5, code => 200);
        is(scalar @m, 1, "... $u gets one MESSAGE");
        $requests += @m;
        like($m[0] ? $m[0]->body : '', qr/Hello list\./, '... with the text') if @m;
    }
}

# ---- SipExplodeRate 4 per user per minute: alice has used 3

{
    my $r = explode(user => 'alice', targets => [ "sip:bob\@$us" ]);
    is($r && $r->code, 200, "alice's fourth explosion this minute -> 200");
    $explosions++;
    $requests += gather($peer{bob}, want => 1, secs => 5, code => 200);
    $r = explode(user => 'alice', targets => [ "sip:bob\@$us" ]);
    is($r && $r->code, 403, '... the fifth -> 403 (SipExplodeRate)');
    like($r ? $r->reason : '', qr/Too Many/i, '... "Too Many Explosions"');
    is(scalar $peer{bob}->all(method => 'MESSAGE', wait => 1), 0, '... nothing sent for it');
    $refused++;
    $r = explode(user => 'carol', targets => [ "sip:bob\@$us" ]);
    is($r && $r->code, 200, 'carol still may (the limit is per user)');
    $explosions++;
    $requests += gather($peer{bob}, want => 1, secs => 5, code => 200);
}

# ---- 30 targets, one of which never answers: the line after timer F

my $crowd = $t->peer(name => 'crowd');
my $slow = $t->peer(name => 'slow');
ok(register('slow', $slow->uri('slow')), 'slow registers a device that never answers');
my $regs = 0;
$regs += register("u$_", $crowd->uri("u$_")) for 1 .. 100;
is($regs, 100, 'u1 ... u100 register devices');
{
    my @targets = ((map { "sip:u$_\@$us" } 1 .. 29), "sip:slow\@$us");
    my $mark = $t->log_mark;
    my $t0 = time;
    my $r = explode(user => 'dora', targets => \@targets);
    is($r && $r->code, 200, '30 targets -> 200');
    $explosions++;
    my @m = gather($crowd, want => 29, secs => 10, code => 200);
    is(scalar @m, 29, '... 29 devices get their MESSAGE');
    my @s = gather($slow, want => 1, secs => 5);
    is(scalar @s, 1, '... the silent one too');
    $requests += @m + @s;
    my $early = $t->wait_log($mark, qr/sip explode: dora /, 2);
    is($early, '', '... no line while a request is pending');
    my $line = $t->wait_log($mark, qr/sip explode: dora .*30 targets/, 45);
    like($line, qr/sip:slow\@\Q$us\E=408/, '... after timer F: slow=408');
    my @ok = $line =~ /sip:u\d+\@\Q$us\E=200/g;
    is(scalar @ok, 29, '... and the 29 others =200');
    my $took = time - $t0;
    ok($took > 30, sprintf('... which took timer F (%.1f s)', $took));
    ok($t->options_ok('udp'), 'the engine still answers');
    is($t->engine_pid, $engine, '... the same engine');
}

# ---- SipExplodeMaxTargets (default 100): 101 refused, 100 timed

{
    my @targets = map { "sip:u$_\@$us" } 1 .. 100;
    $crowd->forget;
    my $r = explode(user => 'dora', targets => [ @targets, "sip:slow\@$us" ]);
    is($r && $r->code, 403, '101 targets -> 403 (EX-11)');
    is(scalar $crowd->all(method => 'MESSAGE', wait => 1), 0, '... nothing sent');
    $refused++;
    my $mark = $t->log_mark;
    my $t0 = time;
    $r = explode(user => 'dora', targets => \@targets);
    my $answered = time - $t0;
    is($r && $r->code, 200, '100 targets -> 200');
    $explosions++;
    my @m = gather($crowd, want => 100, secs => 15, code => 200);
    my $delivered = time - $t0;
    is(scalar @m, 100, '... 100 MESSAGEs, one per device');
    $requests += @m;
    my $line = $t->wait_log($mark, qr/sip explode: dora .*100 targets/, 10);
    my $logged = time - $t0;
    my @ok = $line =~ /=200/g;
    is(scalar @ok, 100, '... the line has every one =200');
    diag(sprintf('100-target explosion: answered in %.3f s, all delivered in %.3f s, '
                 . 'logged after %.3f s', $answered, $delivered, $logged));
}

# ---- the counters (EX-25's numbers on mod_status)

{
    my $s = stats();
    is($s->{SipExplosions} - $s0->{SipExplosions}, $explosions, "SipExplosions +$explosions");
    is($s->{SipExplodeRequests} - $s0->{SipExplodeRequests}, $requests, "SipExplodeRequests +$requests");
    is($s->{SipExplodeRefused} - $s0->{SipExplodeRefused}, $refused, "SipExplodeRefused +$refused");
    is($s->{SipExplodeConsentRefused} - $s0->{SipExplodeConsentRefused}, $consent,
       "SipExplodeConsentRefused +$consent");
}

done_testing;
