#!/usr/bin/perl
# CPL scripts users upload in REGISTER (draft-lennox-sip-reg-payload) run
# for their calls: the uploaded script before SipDirectory's user@host.cpl,
# removal restoring it; <outgoing> (RFC 3880 §2.3) runs for an INVITE
# whose From is one of our users only when the request was digest-
# authenticated as that user (not without credentials, not with another
# user's), before it is forwarded onward or routed to a user of ours; its
# default ending lets the call proceed, the callee's incoming script
# included.  Over UDP, and TCP for the upload and one call.
use strict;
use warnings;
use Test::More;
use SipCgiTest qw(parse_msg wait_until rand_token);
use SipDigest qw(digest_challenge digest_credentials digest_server);
use File::Temp ();

my $NS = 'urn:ietf:params:xml:ns:cpl';
sub cpl { my ($body) = @_; return qq{<?xml version="1.0"?>\n<cpl xmlns="$NS">$body</cpl>\n} }
my %F = (mode => 0644);

my $realm = 'cpl.test';
my %pw = (alice => 'a-pw', bob => 'b-pw', carol => 'c-pw', dave => 'd-pw', eve => 'e-pw', frank => 'f-pw', gina => 'g-pw');
my $t = SipCgiTest->new(digest_server(
    realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/store', 'SipUploadUser nobody' ],
    location => [ 'SipScriptUpload On' ],
    after => [ '<Location "/open@127.0.0.1">', '    SipAuth Off', '</Location>' ],
    scripts => {
        'carol@127.0.0.1.cpl' => { text => cpl('<incoming><reject status="486" reason="carol busy"/></incoming>'), %F },
        'eve@127.0.0.1.cpl'   => { text => cpl('<incoming><reject status="486" reason="eve admin"/></incoming>'), %F },
        'frank@127.0.0.1.cpl' => { text => cpl('<outgoing><reject status="403" reason="frank admin out"/></outgoing>'), %F },
        'open@127.0.0.1.cpl'  => { text => cpl('<incoming><reject status="480" reason="open here"/></incoming>'), %F },
    },
));
my $port = $t->sip_port;
my $us = "127.0.0.1:$port";
my $engine = $t->engine_pid;
sub aor { return "sip:$_[0]\@$us" }

# ---- uploads (REGISTER with a script body, digest as the owner)
sub upload {
    my ($user, $body, %o) = @_;
    my $tr = $o{transport} // 'udp';
    my %a = (method => 'REGISTER', uri => "sip:$us", to => '<' . aor($user) . '>',
             from => '<' . aor($user) . '>;tag=' . rand_token(6), call_id => rand_token(12) . '@up');
    my @h = defined $body ? ('Content-Disposition' => 'script;action=store')
                          : ('Content-Disposition' => 'script;action=remove');
    my @x = $t->transact($tr, %a, cseq => 1, headers => \@h, body => $body // '',
                         (defined $body ? (content_type => 'application/cpl+xml') : ()));
    my $c = digest_challenge($x[-1], 'www-authenticate') or return undef;
    @x = $t->transact($tr, %a, cseq => 2, body => $body // '',
                      (defined $body ? (content_type => 'application/cpl+xml') : ()),
                      headers => [ @h, Authorization => digest_credentials(challenge => $c, user => $user,
                                   password => $pw{$user}, method => 'REGISTER', uri => "sip:$us") ]);
    return @x ? $x[-1] : undef;
}

my $caller = $t->peer(name => 'caller');
# INVITE to $uri with From $o{from} (a user name), answering the challenge
# as $o{as} (none: no credentials; the challenge is the final answer).
sub call {
    my ($uri, %o) = @_;
    my $from = '<' . aor($o{from}) . '>;tag=' . rand_token(6);
    my $cid = rand_token(12) . '@cpl';
    my $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 1);
    my $r = $caller->final_for($inv, 5);
    return $r unless $r && ($r->code == 401 || $r->code == 407) && $o{as};
    $caller->ack($inv, $r);
    my $proxy = $r->code == 407;
    my $c = digest_challenge($r, $proxy ? 'proxy-authenticate' : 'www-authenticate');
    $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 2,
                           headers => [ ($proxy ? 'Proxy-Authorization' : 'Authorization')
                                        => digest_credentials(challenge => $c, user => $o{as},
                                                              password => $pw{$o{as}}, method => 'INVITE', uri => $uri) ]);
    $r = $caller->final_for($inv, $o{timeout} // 5);
    $caller->ack($inv, $r) if $r && $r->code >= 300;
    return wantarray ? ($r, $inv) : $r;
}
sub answer { my ($r) = @_; return $r ? $r->code . ' ' . $r->reason : 'none' }

# ---- an uploaded incoming script runs before SipDirectory's user@host.cpl
is(answer(call(aor('eve'), from => 'alice', as => 'alice')), '486 eve admin', 'eve without upload: SipDirectory\'s eve@host.cpl');
my $r = upload('eve', cpl('<incoming><reject status="486" reason="eve uploaded"/></incoming>'), transport => 'tcp');
is($r && $r->code, 200, 'eve uploads a CPL script (TCP)');
is(answer(call(aor('eve'), from => 'alice', as => 'alice')), '486 eve uploaded', '... it runs before SipDirectory\'s');
{
    my @x = $t->transact('tcp', method => 'INVITE', uri => aor('eve'));
    my $c = digest_challenge($x[-1], 'www-authenticate');
    @x = $t->transact('tcp', method => 'INVITE', uri => aor('eve'), cseq => 2,
                      headers => [ Authorization => digest_credentials(challenge => $c, user => 'bob', password => 'b-pw',
                                                                       method => 'INVITE', uri => aor('eve')) ]);
    is(@x && answer($x[-1]), '486 eve uploaded', '... over TCP too');
}
sleep 1.1;      # stored times have one-second resolution: a new version
$r = upload('eve', cpl('<incoming><reject status="486" reason="eve replaced"/></incoming>'));
is(answer(call(aor('eve'), from => 'alice', as => 'alice')), '486 eve replaced', 'a replaced upload is used at once');
$r = upload('eve', undef);
is($r && $r->code, 200, 'eve removes her script');
is(answer(call(aor('eve'), from => 'alice', as => 'alice')), '486 eve admin', '... SipDirectory\'s script runs again');

# ---- <outgoing>
is(upload('dave', cpl('<outgoing><reject status="403" reason="dave may not call"/></outgoing>'))->code, 200,
   'dave uploads an <outgoing> script that refuses his calls');
is(answer(call(aor('carol'), from => 'dave', as => 'dave')), '403 dave may not call',
   'dave, authenticated, calls carol: his outgoing script answers');
is(answer(call(aor('open'), from => 'dave')), '480 open here',
   'From dave without authentication (SipAuth Off there): his outgoing script does not run');
is(answer(call(aor('carol'), from => 'dave', as => 'bob')), '486 carol busy',
   'From dave authenticated as bob: not dave\'s outgoing script (anyone can write a From)');
my $far = $t->peer(name => 'far');
{
    my $fin = call($far->uri('someone'), from => 'dave', as => 'dave');
    is(answer($fin), '403 dave may not call', 'dave calls elsewhere (forwarded onward): his outgoing script answers first');
    ok(!$far->expect(method => 'INVITE', timeout => 0.5), '... nothing is forwarded');
}
is(answer(call(aor('carol'), from => 'frank', as => 'frank')), '403 frank admin out',
   'an administrator\'s user@host.cpl <outgoing> runs too');

# an outgoing script that sends the call elsewhere: proxied there
{
    my $other = $t->peer(name => 'other');
    is(upload('gina', cpl('<outgoing><location url="' . $other->uri('desk') . '" clear="yes"><proxy/></location></outgoing>'))->code,
       200, 'gina uploads an <outgoing> script that sends her calls to another place');
    my $from = '<' . aor('gina') . '>;tag=' . rand_token(6);
    my $cid = rand_token(12) . '@gina';
    my $uri = aor('carol');
    my $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 1);
    my $ch = $caller->final_for($inv, 5);
    $caller->ack($inv, $ch) if $ch;
    $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 2,
                           headers => [ Authorization => digest_credentials(challenge => digest_challenge($ch, 'www-authenticate'),
                                        user => 'gina', password => 'g-pw', method => 'INVITE', uri => $uri) ]);
    my $f = $other->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    is($f && $f->uri, $other->uri('desk'), 'gina calls carol: the call goes where her script says');
    $other->reply($f, 486, reason => 'Desk Busy') if $f;
    my $fin = $caller->final_for($inv, 3);
    is(answer($fin), '486 Desk Busy', '... and that answer comes back (not carol\'s script)');
    $caller->ack($inv, $fin) if $fin;
}

is(upload('alice', cpl('<outgoing><log name="out" comment="alice places a call"/></outgoing>'))->code, 200,
   'alice uploads an <outgoing> script that only logs');
{
    my $mark = $t->log_mark;
    is(answer(call(aor('carol'), from => 'alice', as => 'alice')), '486 carol busy',
       'alice calls carol: the call proceeds to carol\'s incoming script');
    like($t->log_since($mark), qr/cpl: uploaded by sip:alice\@127\.0\.0\.1 \(owner sip:alice\@127\.0\.0\.1\) log out: alice places a call/,
         '... after alice\'s outgoing script logged');
    my ($fin, $inv);
    my $cid;
    {
        my $from = '<' . aor('alice') . '>;tag=' . rand_token(6);
        $cid = rand_token(12) . '@far';
        my $uri = $far->uri('someone');
        $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 1);
        my $ch = $caller->final_for($inv, 5);
        $caller->ack($inv, $ch) if $ch;
        my $c = digest_challenge($ch, 'proxy-authenticate');
        $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 2,
                               headers => [ 'Proxy-Authorization' => digest_credentials(challenge => $c, user => 'alice',
                                            password => 'a-pw', method => 'INVITE', uri => $uri) ]);
    }
    my $f = $far->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f, 'alice calls elsewhere: forwarded onward after her outgoing script');
    $far->reply($f, 200) if $f;
    $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 200, '... and the answer comes back');
    $caller->ack($inv, $fin) if $fin;
}

is($t->engine_pid, $engine, 'the engine was never restarted');
$t->stop;

# ---- SipLocation dbd (SQLite): the store and the lookup answer later, from the DB thread
SKIP: {
    my $MODDIR = $SipTest::MODDIR;
    skip 'mod_dbd not installed', 6 unless -e "$MODDIR/mod_dbd.so";
    my $dbdir = File::Temp::tempdir('cpl_db_XXXXXX', DIR => '/tmp', CLEANUP => 1);
    chmod 0777, $dbdir;
    $t = SipCgiTest->new(digest_server(
        realm => $realm, users => \%pw,
        conf => [ "LoadModule dbd_module $MODDIR/mod_dbd.so", 'DBDriver sqlite3', "DBDParams \"$dbdir/loc.db\"",
                  'SipLocation dbd', 'SipUploadUser nobody' ],
        location => [ 'SipScriptUpload On' ]));
    $port = $t->sip_port;
    $us = "127.0.0.1:$port";
    $engine = $t->engine_pid;
    $caller = $t->peer(name => 'caller');
    my $r = upload('eve', cpl('<incoming><lookup source="registration"><success><proxy timeout="3"/></success>'
                            . '<notfound><reject status="404" reason="db nobody"/></notfound></lookup></incoming>'));
    is($r && $r->code, 200, 'dbd: eve uploads a lookup script');
    is(answer(call(aor('eve'), from => 'alice', as => 'alice')), '404 db nobody',
       'dbd: her script is fetched and her bindings looked up through the database (none)');
    my $dev = $t->peer(name => 'evedev');
    {
        my %a = (method => 'REGISTER', uri => "sip:$us", to => '<' . aor('eve') . '>',
                 from => '<' . aor('eve') . '>;tag=' . rand_token(6), call_id => rand_token(12) . '@db');
        my @h = (Contact => '<' . $dev->uri('eve') . '>', Expires => 600);
        my @x = $t->transact('udp', %a, cseq => 1, headers => \@h);
        my $c = digest_challenge($x[-1], 'www-authenticate');
        @x = $t->transact('udp', %a, cseq => 2, headers => [ @h, Authorization => digest_credentials(challenge => $c,
                          user => 'eve', password => 'e-pw', method => 'REGISTER', uri => "sip:$us") ]);
        is(@x && $x[-1]->code, 200, 'dbd: eve registers a device');
    }
    my ($fin, $inv);
    {
        my $from = '<' . aor('alice') . '>;tag=' . rand_token(6);
        my $cid = rand_token(12) . '@dbcall';
        my $uri = aor('eve');
        $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 1);
        my $ch = $caller->final_for($inv, 5);
        $caller->ack($inv, $ch) if $ch;
        $inv = $caller->invite(uri => $uri, from => $from, call_id => $cid, cseq => 2,
                               headers => [ Authorization => digest_credentials(challenge => digest_challenge($ch, 'www-authenticate'),
                                            user => 'alice', password => 'a-pw', method => 'INVITE', uri => $uri) ]);
        my $f = $dev->expect(method => 'INVITE', call_id => $cid, timeout => 5);
        ok($f, 'dbd: the lookup finds the device, the script proxies there');
        $dev->reply($f, 486, reason => 'Eve Busy') if $f;
        $fin = $caller->final_for($inv, 5);
        is(answer($fin), '486 Eve Busy', '... and its answer comes back');
        $caller->ack($inv, $fin) if $fin;
    }
    is($t->engine_pid, $engine, 'dbd: the engine was never restarted');
    $t->stop;
}
done_testing;
