#!/usr/bin/perl
# Users' scripts in REGISTER bodies (draft-lennox-sip-reg-payload-01;
# docs/register-payload.md): upload, replace, remove and download of
# 'script' (CPL) and 'sip-cgi' scripts with Content-Disposition and
# action=, Accept / Accept-Disposition filtering, multipart/mixed both
# ways, If-Unmodified-Since (412), the size limits (413), what is refused
# (400, 403, 415) and that a refused REGISTER changes nothing, over UDP and
# TCP; persistence across restarts.  Subtests are named after the
# checklist items RP-n and the scenarios Tn of the spec digest.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use SipTest qw(rand_token wait_until parse_msg);
use SipRegTest;
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'payload.test';
my %pw = (alice => 'a-pw', bob => 'b-pw', map { (sprintf('u%02d', $_) => "pw$_") } 1 .. 90);
my $next_user = 0;
sub newuser { return sprintf('u%02d', ++$next_user) }

my $t = SipRegTest->new(digest_server(
    realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/store', 'SipUploadUser nobody' ],
    location => [ 'SipScriptUpload On' ],
    after => [ '<Location "/off@127.0.0.1">', '    SipScriptUpload Off', '</Location>',
               '<Location "/open@127.0.0.1">', '    SipAuth Off', '</Location>' ],
    vhost_conf => "SipScriptUploadMaxSize 2000\nSipScriptUploadMaxTotal 3000\nSipMinExpires 1",
));
my $port = $t->sip_port;
my $reg_uri = "sip:127.0.0.1:$port";

# one challenge for the whole test (nonce-counts keep rising); a new
# engine (restart) has a new nonce secret and so needs a new one
sub challenge_of {
    my ($srv, $user) = @_;
    my @r = $srv->transact('udp', method => 'REGISTER', uri => 'sip:127.0.0.1:' . $srv->sip_port,
                           to => '<' . $srv->aor($user) . '>', from => '<' . $srv->aor($user) . '>;tag=x1',
                           sock => $srv->udp_socket);
    return digest_challenge($r[-1], 'www-authenticate') // die "no challenge";
}
my $ch = challenge_of($t, 'alice');

my $cseq = 1;
# A REGISTER for $o{user} (default carol) with digest credentials of
# $o{as} (default the user; noauth => 1: none) and:
#   contacts, expires, headers => [...], body, ctype, cd (Content-Disposition),
#   transport (udp|tcp), call_id.
# The final response (SipTest::Msg) or undef.
sub preg {
    my (%o) = @_;
    my $user = $o{user} // 'carol';
    my $as = $o{as} // $user;
    my $to = '<' . ($o{server} // $t)->aor($user) . '>';
    my $tr = $o{transport} // 'udp';
    my @h;
    push @h, Contact => $_ for @{ $o{contacts} || [] };
    push @h, Expires => $o{expires} if defined $o{expires};
    push @h, 'Content-Disposition' => $o{cd} if defined $o{cd};
    push @h, Authorization => digest_credentials(challenge => $o{challenge} // $ch, user => $as,
                                                 password => $pw{$as}, method => 'REGISTER',
                                                 uri => 'sip:127.0.0.1:' . ($o{server} // $t)->sip_port,
                                                 qop => $o{qop}, body => $o{signed_body} // $o{body})
        unless $o{noauth};
    push @h, @{ $o{headers} || [] };
    my $from = $o{from} // $to;
    my $srv = $o{server} // $t;
    my @r = eval {
        $srv->transact($tr, method => 'REGISTER', uri => 'sip:127.0.0.1:' . $srv->sip_port, to => $to,
                     from => "$from;tag=" . rand_token(8), call_id => $o{call_id} // (rand_token(16) . '@pl'),
                     cseq => $o{cseq} // ++$cseq, headers => \@h, body => $o{body} // '',
                     (defined $o{ctype} ? (content_type => $o{ctype}) : ()),
                     ($tr eq 'udp' ? (sock => $t->udp_socket) : ()), timeout => 5);
    };
    diag("preg: $@") if $@;
    return @r && $r[-1]->is_final ? $r[-1] : undef;
}

# The scripts in a 200: list of { type, ctype, cd, mdate, body } from a
# single body or a multipart/mixed one.
sub scripts_of {
    my ($r) = @_;
    return () unless $r;
    my $ct = $r->header('content-type') // '';
    if ($ct =~ m{^multipart/mixed}i) {
        my ($b) = $ct =~ /boundary="?([^";]+)"?/i or return ({ error => 'no boundary' });
        my $body = $r->body;
        my @out;
        my @chunks = split /(?:^|\r\n)--\Q$b\E(?:--)?[ \t]*(?:\r\n|$)/, $body;
        shift @chunks;    # preamble
        for my $c (@chunks) {
            my ($head, $pb) = $c =~ /\A(.*?)\r\n\r\n(.*)\z/s ? ($1, $2) : ($c, '');
            $head = '' if $c =~ /\A\r\n/;
            $pb = substr($c, 2) if $c =~ /\A\r\n/;
            my %h;
            for (split /\r\n/, $head) { $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/ }
            next unless %h || length $pb;
            push @out, part_info($h{'content-type'}, $h{'content-disposition'}, $pb);
        }
        return @out;
    }
    my $cd = $r->header('content-disposition');
    return () unless defined $cd;
    return (part_info($ct, $cd, $r->body));
}

sub part_info {
    my ($ct, $cd, $body) = @_;
    my ($type) = ($cd // '') =~ /^\s*([^;\s]+)/;
    my ($md) = ($cd // '') =~ /modification-date="([^"]*)"/i;
    return { type => lc($type // ''), ctype => $ct, cd => $cd, mdate => $md, body => $body };
}

sub nscripts { my @s = scripts_of(@_); return scalar @s }

sub by_type { my %m = map { $_->{type} => $_ } @_; return \%m }

my $perl = "#!/usr/bin/perl\nprint \"CGI-ACTION: default\\n\\n\";\n";
my $cpl = qq{<?xml version="1.0" encoding="UTF-8"?>\n<cpl xmlns="urn:ietf:params:xml:ns:cpl">\n}
        . qq{  <incoming><reject status="busy"/></incoming>\n</cpl>\n};

my $sh = "#!/bin/sh\necho 'CGI-ACTION: default'\necho\n";
my $XP = [ Accept => 'application/x-perl, application/sdp, text/html' ];

# Wait for the next whole second: stored times have 1 s resolution.
sub next_second { my $n = time; sleep(POSIX::ceil($n) - $n + 0.05) }

sub store {
    my ($user, $type, $body, %o) = @_;
    my $ctype = $o{ctype} // ($type eq 'script' ? 'application/cpl+xml' : 'application/x-perl');
    return preg(user => $user, cd => "$type;action=store", ctype => $ctype, body => $body, %o);
}

# The user's scripts now, by type (a query REGISTER asking for all of them, over TCP).
sub stored {
    my ($user, %o) = @_;
    my $r = preg(user => $user, transport => 'tcp',
                 headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => '*' ], %o);
    return $r && $r->code == 200 ? by_type(scripts_of($r)) : undef;
}

# The server answers (an OPTIONS where no SipAuth applies).
sub alive { my ($tr) = @_; return $t->options_ok($tr // 'udp', "sip:open\@127.0.0.1:$port") }

sub bindings { my ($user, %o) = @_; my $r = preg(user => $user, %o); return { SipRegTest::binding_map($r) } }

sub refused_cleanly {
    my ($user, $r, $code, $label) = @_;
    is($r && $r->code, $code, "$label -> $code");
    is($r && length($r->body // ''), 0, '... no body') unless $label =~ /text\/plain/;
    my $s = stored($user);
    is($s && scalar(keys %$s), 0, '... nothing stored');
    is(scalar(keys %{ bindings($user) }), 0, '... no binding added (RP-14)');
}

# ================================================== scenarios T1-T11, UDP and TCP
for my $tr (qw(udp tcp)) {
    my $u = newuser();
    subtest "T1 ($tr): upload a SIP-CGI script with a contact" => sub {
        my $r = preg(user => $u, transport => $tr, contacts => [ "<sip:$u\@127.0.0.1:5601>" ], expires => 1800,
                     headers => [ @$XP, 'Accept-Disposition' => 'sip-cgi' ],
                     ctype => 'application/x-perl', cd => 'sip-cgi; action=store', body => $perl);
        is($r && $r->code, 200, '200 OK');
        my %b = SipRegTest::binding_map($r);
        ok($b{"sip:$u\@127.0.0.1:5601"}, 'the binding is listed');
        ok($b{"sip:$u\@127.0.0.1:5601"}{expires} <= 1800, '... with its own expiry');
        my @s = scripts_of($r);
        is(scalar @s, 1, 'the stored script comes back (Accept and Accept-Disposition allow it)');
        is($s[0]{type}, 'sip-cgi', '... as sip-cgi');
        is($s[0]{body}, $perl, '... byte for byte');
        like($s[0]{ctype} // '', qr{^application/x-perl}i, '... with its Content-Type');
    };
    my $mdate;
    subtest "T2 ($tr): a later REGISTER returns the current script" => sub {
        my $r = preg(user => $u, transport => $tr, contacts => [ "<sip:$u\@127.0.0.1:5602>" ], expires => 1800,
                     headers => [ @$XP, 'Accept-Disposition' => 'sip-cgi' ]);
        is($r && $r->code, 200, '200 OK');
        my %b = SipRegTest::binding_map($r);
        ok($b{"sip:$u\@127.0.0.1:5601"} && $b{"sip:$u\@127.0.0.1:5602"}, 'both contacts listed');
        like($r->header('accept') // '', qr{application/cpl\+xml.*\*/\*}, 'Accept: application/cpl+xml ... */*');
        like($r->header('accept-disposition') // '', qr{^script, sip-cgi$}, 'Accept-Disposition: script, sip-cgi');
        my @s = scripts_of($r);
        is(scalar @s, 1, 'one script in the body');
        is($s[0]{body}, $perl, 'the Perl script');
        $mdate = $s[0]{mdate};
        like($mdate // '', qr/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/, 'modification-date is a quoted SIP-date');
        unlike($s[0]{cd}, qr/action/i, '... and there is no action');
    };
    subtest "T3 ($tr): remove the script" => sub {
        my $r = preg(user => $u, transport => $tr, cd => 'sip-cgi; action=remove',
                     headers => [ @$XP, 'Accept-Disposition' => 'sip-cgi' ]);
        is($r && $r->code, 200, '200 OK');
        ok($r && $r->header('accept') && defined $r->header('accept-disposition'), 'Accept and Accept-Disposition');
        is($r && length($r->body), 0, 'no body');
        is($r && $r->header('content-disposition'), undef, 'no Content-Disposition');
        my %b = SipRegTest::binding_map($r);
        is(scalar keys %b, 2, 'bindings untouched');
        is(nscripts(preg(user => $u, transport => $tr, headers => [ 'Accept-Disposition' => '*' ])), 0,
           'a later download has no script');
    };
    subtest "T4 ($tr): lost update refused with 412" => sub {
        my $v = newuser();
        store($v, 'script', $cpl, transport => $tr);
        my $t0 = stored($v)->{script}{mdate};
        ok($t0, "A downloads the CPL script (modification-date $t0)");
        next_second();
        (my $cplb = $cpl) =~ s/busy/notfound/;
        is(store($v, 'script', $cplb, transport => $tr)->code, 200, 'B uploads a new one');
        (my $cpla = $cpl) =~ s/busy/error/;
        my $r = store($v, 'script', $cpla, transport => $tr, contacts => [ "<sip:$v\@127.0.0.1:5603>" ],
                      expires => 600, headers => [ 'If-Unmodified-Since' => $t0, 'Accept-Disposition' => '*' ]);
        is($r && $r->code, 412, "A re-uploads with If-Unmodified-Since: t0 -> 412");
        is($r && length($r->body), 0, '... no script in the error (RP-28)');
        my $s = stored($v);
        is($s->{script}{body}, $cplb, "the stored script is B's");
        is(scalar(keys %{ bindings($v) }), 0, "A's Contact is not bound");
        my $t1 = $s->{script}{mdate};
        isnt($t1, $t0, "the modification-date moved on ($t1)");
        $r = store($v, 'script', $cpla, transport => $tr, contacts => [ "<sip:$v\@127.0.0.1:5603>" ],
                   expires => 600, headers => [ 'If-Unmodified-Since' => $t1 ]);
        is($r && $r->code, 200, 'A downloads again (t1) and re-uploads with If-Unmodified-Since: t1 -> 200');
        is(stored($v)->{script}{body}, $cpla, "A's script is stored");
        is(scalar(keys %{ bindings($v) }), 1, "and A's Contact bound");
    };
    subtest "T5 ($tr): CPL and SIP-CGI together; multipart download" => sub {
        my $v = newuser();
        is(store($v, 'script', $cpl, transport => $tr)->code, 200, 'CPL stored');
        is(store($v, 'sip-cgi', $perl, transport => $tr)->code, 200, 'SIP-CGI stored');
        my $r = preg(user => $v, transport => $tr,
                     headers => [ Accept => 'multipart/mixed, application/cpl+xml, application/x-perl',
                                  'Accept-Disposition' => 'script, sip-cgi' ]);
        like($r && $r->header('content-type') // '', qr{^multipart/mixed;\s*boundary=}i, 'multipart/mixed 200');
        my @s = scripts_of($r);
        is(scalar @s, 2, 'two parts');
        my $m = by_type(@s);
        is($m->{script}{body}, $cpl, 'the CPL part');
        like($m->{script}{ctype} // '', qr{^application/cpl\+xml}, '... Content-Type application/cpl+xml (RP-26)');
        is($m->{'sip-cgi'}{body}, $perl, 'the SIP-CGI part');
        like($m->{'sip-cgi'}{ctype} // '', qr{^application/x-perl}, '... Content-Type application/x-perl (RP-26)');
        ok($m->{script}{mdate} && $m->{'sip-cgi'}{mdate}, 'each part has a modification-date (RP-27)');
        ok(!grep({ $_->{cd} =~ /action/i } @s), 'no part has an action (RP-27)');
        $r = preg(user => $v, transport => $tr,
                  headers => [ Accept => 'application/cpl+xml, application/x-perl',
                               'Accept-Disposition' => 'script, sip-cgi' ]);
        @s = scripts_of($r);
        is(scalar @s, 1, 'without multipart/mixed in Accept: exactly one script');
        unlike($r->header('content-type') // '', qr/multipart/i, '... as a single body');
        ok($s[0]{type} && $r->header('content-disposition'), '... with its Content-Disposition');
    };
    subtest "T6 ($tr): an empty Accept-Disposition opts out of downloads" => sub {
        my $v = newuser();
        store($v, 'script', $cpl, transport => $tr);
        my $r = preg(user => $v, transport => $tr, headers => [ Accept => '*/*', 'Accept-Disposition' => '' ]);
        is($r && $r->code, 200, '200 OK');
        is(nscripts($r), 0, 'no script');
        is(length($r->body), 0, 'no body');
    };
    subtest "T7 ($tr): filtering by Accept" => sub {
        my $v = newuser();
        store($v, 'script', $cpl, transport => $tr);
        my $r = preg(user => $v, transport => $tr, headers => [ Accept => 'application/sdp' ]);
        is($r && $r->code, 200, '200 OK');
        is(nscripts($r), 0, 'Accept: application/sdp, no Accept-Disposition: no script');
        $r = preg(user => $v, transport => $tr, headers => [ Accept => 'application/sdp', 'Accept-Disposition' => '*' ]);
        is(nscripts($r), 0, '... nor with Accept-Disposition: * (the media type fails Accept)');
        $r = preg(user => $v, transport => $tr, headers => [ Accept => 'application/*' ]);
        is(nscripts($r), 1, 'Accept: application/* names it: the script comes back');
    };
    subtest "T8 ($tr): unauthenticated upload" => sub {
        my $v = newuser();
        my $r = preg(user => $v, transport => $tr, noauth => 1, contacts => [ "<sip:$v\@127.0.0.1:5604>" ],
                     expires => 600, cd => 'sip-cgi;action=store', ctype => 'application/x-perl', body => $perl);
        is($r && $r->code, 401, '401 challenge');
        ok(digest_challenge($r, 'www-authenticate'), '... with WWW-Authenticate');
        ok($r && $r->header('accept-disposition'), '... and Accept-Disposition (RP-29)');
        is(scalar(keys %{ stored($v) }), 0, 'no script stored');
        is(scalar(keys %{ bindings($v) }), 0, 'no binding stored');
        $r = preg(user => $v, transport => $tr, contacts => [ "<sip:$v\@127.0.0.1:5604>" ],
                  expires => 600, cd => 'sip-cgi;action=store', ctype => 'application/x-perl', body => $perl);
        is($r && $r->code, 200, 'retry with credentials: 200');
        is(stored($v)->{'sip-cgi'}{body}, $perl, 'stored');
    };
    subtest "T9 ($tr): invalid CPL" => sub {
        my $v = newuser();
        my $r = store($v, 'script', "<cpl xmlns='urn:ietf:params:xml:ns:cpl'><incoming>", transport => $tr,
                      contacts => [ "<sip:$v\@127.0.0.1:5605>" ], expires => 600, headers => [ Accept => 'text/plain' ]);
        is($r && $r->code, 400, '400 Bad Request');
        like($r && $r->reason, qr/CPL/i, '... reason names the CPL script');
        like($r && $r->header('content-type') // '', qr{^text/plain}, '... with a text/plain explanation (Accept allows it)');
        like($r && $r->body, qr/XML/i, '... saying what is wrong');
        is(scalar(keys %{ stored($v) }), 0, 'no script stored');
        is(scalar(keys %{ bindings($v) }), 0, 'no binding added');
    };
    subtest "T10 ($tr): an empty stored script is not no script" => sub {
        my $v = newuser();
        my $r = preg(user => $v, transport => $tr, cd => 'script;action=store', ctype => 'application/cpl+xml');
        is($r && $r->code, 200, 'script; action=store with Content-Length 0 -> 200');
        $r = preg(user => $v, transport => $tr, headers => [ Accept => 'application/cpl+xml', 'Accept-Disposition' => 'script' ]);
        like($r->header('content-disposition') // '', qr/^script\b/, 'a download shows disposition script');
        is($r->header('content-length'), '0', '... with Content-Length: 0');
        like($r->header('content-type') // '', qr{^application/cpl\+xml}, '... and its Content-Type');
        is(preg(user => $v, transport => $tr, cd => 'script;action=remove')->code, 200, 'action=remove -> 200');
        $r = preg(user => $v, transport => $tr, headers => [ Accept => 'application/cpl+xml', 'Accept-Disposition' => 'script' ]);
        is($r->header('content-disposition'), undef, 'a download shows no script part');
    };
    subtest "T11 ($tr): precedence: the validation error, not 412" => sub {
        my $v = newuser();
        store($v, 'script', $cpl, transport => $tr);
        my $r = store($v, 'script', '<not-cpl/>', transport => $tr,
                      headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
        is($r && $r->code, 400, 'invalid script with a failing If-Unmodified-Since -> 400, not 412');
        $r = store($v, 'script', $cpl, transport => $tr, noauth => 1,
                   headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
        is($r && $r->code, 401, 'no credentials -> 401, not 412 (RP-20)');
        $r = store($v, 'script', $cpl, transport => $tr, as => 'alice',
                   headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
        is($r && $r->code, 403, 'another user -> 403, not 412 (RP-20)');
        $r = store($v, 'script', $cpl, transport => $tr,
                   headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
        is($r && $r->code, 412, 'and a valid one -> 412');
    };
}

# ================================================== checklist items
subtest 'RP-1: Content-Disposition in any order and case, with other parameters' => sub {
    my $v = newuser();
    my $r = preg(user => $v, cd => 'SIP-CGI ; foo=bar; Action=STORE;handling=required;x', ctype => 'application/x-perl',
                 body => $perl);
    is($r && $r->code, 200, '"SIP-CGI ; foo=bar; Action=STORE;handling=required;x" -> stored');
    is(stored($v)->{'sip-cgi'}{body}, $perl, '... as sip-cgi');
    $r = preg(user => $v, cd => 'sip-cgi;handling=optional;ACTION=Remove');
    is($r && $r->code, 200, '"sip-cgi;handling=optional;ACTION=Remove" -> 200');
    is(scalar(keys %{ stored($v) }), 0, '... removed');
    $r = preg(user => $v, cd => 'script ;action = store', ctype => 'application/cpl+xml', body => $cpl);
    is($r && $r->code, 200, 'blanks around = and ;');
};

subtest 'RP-2: modification-date is parsed; the stored time is the server\'s (G4)' => sub {
    my $v = newuser();
    my $r = preg(user => $v, cd => 'script;modification-date="Sat, 01 Jan 2000 00:00:00 GMT";action=store',
                 ctype => 'application/cpl+xml', body => $cpl);
    is($r && $r->code, 200, 'upload with a modification-date -> 200');
    my $md = stored($v)->{script}{mdate};
    my $ts = $md ? str2time($md) : 0;
    ok($ts && abs($ts - time) < 30, "the stored modification-date is the server's clock ($md)");
    $r = preg(user => $v, cd => 'script;modification-date="yesterday";action=store', ctype => 'application/cpl+xml',
              body => $cpl);
    is($r && $r->code, 200, 'an unparseable modification-date is ignored');
};

subtest 'RP-3: Accept-Disposition as a comma list and as repeated headers, parameters ignored' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    store($v, 'sip-cgi', $perl);
    my $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => 'foo;x=1',
                                          'Accept-Disposition' => 'SIP-CGI;q=0.1' ]);
    my $m = by_type(scripts_of($r));
    ok($m->{'sip-cgi'} && !$m->{script}, 'two headers "foo;x=1" and "SIP-CGI;q=0.1": the sip-cgi script only');
    $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => ' script ,sip-cgi ' ]);
    is(nscripts($r), 2, '" script ,sip-cgi ": both');
    $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => '*' ]);
    is(nscripts($r), 2, '"*": both (RP-24)');
    $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => 'script' ]);
    $m = by_type(scripts_of($r));
    ok($m->{script} && !$m->{'sip-cgi'}, '"script": the CPL script only (RP-24)');
};

subtest 'RP-4: an empty Accept-Disposition means no scripts' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    my $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => '' ]);
    is($r && $r->code, 200, '200 OK');
    is(nscripts($r), 0, 'no script');
};

subtest 'RP-5: an unparseable If-Unmodified-Since counts as absent' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    my $r = store($v, 'script', $cpl, headers => [ 'If-Unmodified-Since' => 'not a date' ]);
    is($r && $r->code, 200, 'If-Unmodified-Since: not a date -> 200');
    $r = store($v, 'script', $cpl, headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
    is($r && $r->code, 412, 'a real old date -> 412');
};

# A multipart/mixed body of [ [headers...], body ] parts
sub multipart {
    my ($b, @parts) = @_;
    my $out = "preamble to ignore\r\n";
    for my $p (@parts) {
        my ($h, $body) = @$p;
        $out .= "--$b\r\n" . join('', map { "$_\r\n" } @$h) . "\r\n$body\r\n";
    }
    return $out . "--$b--\r\nepilogue\r\n";
}

subtest 'RP-6: multipart upload, each part its own Content-Disposition' => sub {
    my $v = newuser();
    my $body = multipart('xYz42', [ [ 'Content-Type: application/cpl+xml', 'Content-Disposition: script;action=store' ], $cpl ],
                         [ [ 'content-type: application/x-perl', 'content-disposition: sip-cgi; action=store' ], $perl ]);
    my $r = preg(user => $v, ctype => 'multipart/mixed; boundary="xYz42"', cd => 'sip-cgi;action=remove', body => $body,
                 contacts => [ "<sip:$v\@127.0.0.1:5606>" ], expires => 600);
    is($r && $r->code, 200, 'multipart REGISTER with two scripts -> 200');
    my $s = stored($v);
    is($s->{script}{body}, $cpl, 'the CPL part stored');
    is($s->{'sip-cgi'}{body}, $perl, 'the SIP-CGI part stored (the message\'s own action=remove is not used for parts)');
    $body = multipart('b', [ [ 'Content-Disposition: script;action=remove' ], '' ], [ [ 'Content-Disposition: sip-cgi;action=remove' ], '' ]);
    $r = preg(user => $v, ctype => 'multipart/mixed;boundary=b', body => $body);
    is($r && $r->code, 200, 'multipart removal of both -> 200');
    is(scalar(keys %{ stored($v) }), 0, 'both removed');
    $body = multipart('b', [ [ 'Content-Type: application/cpl+xml', 'Content-Disposition: script;action=store' ], $cpl ],
                      [ [ 'Content-Type: application/cpl+xml', 'Content-Disposition: script;action=store' ], $cpl ]);
    $r = preg(user => $v, ctype => 'multipart/mixed;boundary=b', body => $body);
    is($r && $r->code, 400, 'two scripts of one type in one REGISTER -> 400');
};

subtest 'RP-7: a script without action=store is refused' => sub {
    my $v = newuser();
    refused_cleanly($v, preg(user => $v, cd => 'sip-cgi', ctype => 'application/x-perl', body => $perl,
                             contacts => [ "<sip:$v\@127.0.0.1:5607>" ], expires => 600), 400, 'no action');
    refused_cleanly($v, preg(user => $v, cd => 'sip-cgi;action=delete', ctype => 'application/x-perl', body => $perl,
                             contacts => [ "<sip:$v\@127.0.0.1:5607>" ], expires => 600), 400, 'action=delete (not in -01)');
};

subtest 'RP-8: action=remove with a body is refused' => sub {
    my $v = newuser();
    store($v, 'sip-cgi', $perl);
    my $r = preg(user => $v, cd => 'sip-cgi;action=remove', ctype => 'application/x-perl', body => $perl,
                 contacts => [ "<sip:$v\@127.0.0.1:5608>" ], expires => 600);
    is($r && $r->code, 400, '400 Bad Request');
    is(stored($v)->{'sip-cgi'}{body}, $perl, 'the script is still there');
    is(scalar(keys %{ bindings($v) }), 0, 'no binding added');
};

subtest 'RP-9: an empty script is stored and comes back empty' => sub {
    my $v = newuser();
    is(preg(user => $v, cd => 'sip-cgi;action=store')->code, 200, 'sip-cgi, action=store, no body, no Content-Type -> 200');
    store($v, 'script', $cpl);
    my $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*', 'Accept-Disposition' => '*' ]);
    my $s = by_type(scripts_of($r));
    ok($s->{'sip-cgi'}, 'the empty sip-cgi script is a part of the download');
    is($s->{'sip-cgi'} && length($s->{'sip-cgi'}{body}), 0, '... with an empty body');
    ok($s->{'sip-cgi'} && $s->{'sip-cgi'}{ctype}, '... and a Content-Type');
};

subtest 'RP-10: a second upload replaces; another type is separate' => sub {
    my $v = newuser();
    store($v, 'sip-cgi', $perl);
    store($v, 'script', $cpl);
    store($v, 'sip-cgi', $sh, ctype => 'application/x-sh');
    my $s = stored($v);
    is($s->{'sip-cgi'}{body}, $sh, 'the sip-cgi script replaced');
    like($s->{'sip-cgi'}{ctype}, qr{application/x-sh}, '... with its new Content-Type');
    is($s->{script}{body}, $cpl, 'the CPL script untouched');
};

subtest 'RP-11: removing a script that is not there succeeds' => sub {
    my $v = newuser();
    my $r = preg(user => $v, cd => 'script;action=remove', contacts => [ "<sip:$v\@127.0.0.1:5611>" ], expires => 600);
    is($r && $r->code, 200, '200 OK');
    is(scalar(keys %{ bindings($v) }), 1, 'the contact of the same REGISTER is bound');
};

subtest 'RP-13: third-party registration files the script under To' => sub {
    my $v = newuser();
    my $r = store($v, 'script', $cpl, from => '<sip:secretary@127.0.0.1>');
    is($r && $r->code, 200, 'From: secretary, To: the user -> 200');
    is(stored($v)->{script}{body}, $cpl, 'stored under To');
};

subtest 'RP-14, RP-18: a 412 changes neither script nor binding' => sub {
    my $v = newuser();
    store($v, 'script', $cpl, contacts => [ "<sip:$v\@127.0.0.1:5614>" ], expires => 600);
    (my $other = $cpl) =~ s/busy/error/;
    my $r = store($v, 'script', $other, contacts => [ "<sip:$v\@127.0.0.1:5615>", '<sip:x@127.0.0.1:5616>' ],
                  expires => 600, headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
    is($r && $r->code, 412, '412 Precondition Failed');
    is_deeply([ sort keys %{ bindings($v) } ], [ "sip:$v\@127.0.0.1:5614" ], 'bindings as before');
    is(stored($v)->{script}{body}, $cpl, 'script as before');
};

subtest 'RP-15: the explanation body only when Accept lists text/plain' => sub {
    my $v = newuser();
    my $r = store($v, 'script', '<cpl', headers => [ Accept => 'application/sdp' ]);
    is($r && $r->code, 400, '400 for malformed CPL');
    is($r && length($r->body), 0, 'Accept without text/plain: no body');
    ok($r && $r->header('warning'), '... (a Warning says why)');
    $r = store($v, 'script', '<cpl', headers => [ Accept => 'text/*' ]);
    like($r && $r->header('content-type') // '', qr{^text/plain}, 'Accept: text/*: a text/plain body');
};

subtest 'RP-16: unknown SIP-CGI media types are taken' => sub {
    my $v = newuser();
    my $r = store($v, 'sip-cgi', $sh, ctype => 'application/x-foo');
    is($r && $r->code, 200, 'application/x-foo -> 200');
    is(stored($v)->{'sip-cgi'}{ctype}, 'application/x-foo', 'stored with its type');
};

subtest 'RP-17: an unknown disposition type gets 415 with Accept and Accept-Disposition' => sub {
    my $v = newuser();
    my $r = preg(user => $v, cd => 'speed-dial;action=store', ctype => 'text/plain', body => "1 sip:x\@y\n",
                 contacts => [ "<sip:$v\@127.0.0.1:5617>" ], expires => 600);
    is($r && $r->code, 415, '415 Unsupported Media Type');
    ok($r && $r->header('accept'), '... with Accept');
    is($r && $r->header('accept-disposition'), 'script, sip-cgi', '... and Accept-Disposition (no *: nothing else is stored)');
    is(scalar(keys %{ bindings($v) }), 0, 'no binding added');
    $r = preg(user => $v, ctype => 'text/plain', body => "hello\n");
    is($r && $r->code, 415, 'a body without Content-Disposition -> 415');
    $r = preg(user => $v, cd => 'speed-dial;handling=optional', ctype => 'text/plain', body => "1\n",
              contacts => [ "<sip:$v\@127.0.0.1:5617>" ], expires => 600);
    is($r && $r->code, 200, 'handling=optional: the body is ignored, the REGISTER goes on');
    $r = store($v, 'script', "print 1\n", ctype => 'application/x-python');
    is($r && $r->code, 415, "'script' in a language other than CPL -> 415");
};

subtest 'RP-19, RP-21: download, then re-upload with If-Unmodified-Since = modification-date' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    my $md = stored($v)->{script}{mdate};
    my $r = store($v, 'script', $cpl, headers => [ 'If-Unmodified-Since' => $md ]);
    is($r && $r->code, 200, "If-Unmodified-Since: $md (the downloaded date) -> 200");
    $r = store($v, 'script', $cpl, headers => [ 'If-Unmodified-Since' => 'Fri, 31 Dec 2100 00:00:00 GMT' ]);
    is($r && $r->code, 200, 'a later date -> 200');
    my $w = newuser();
    $r = store($w, 'script', $cpl, headers => [ 'If-Unmodified-Since' => 'Sat, 01 Jan 2000 00:00:00 GMT' ]);
    is($r && $r->code, 200, 'no script of that type yet: unmodified (G6)');
};

subtest 'RP-22, RP-23: a plain REGISTER downloads; media types failing Accept are left out' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    store($v, 'sip-cgi', $perl);
    my $r = preg(user => $v, headers => [ Accept => 'application/cpl+xml', 'Accept-Disposition' => '*' ]);
    my $m = by_type(scripts_of($r));
    ok($m->{script} && !$m->{'sip-cgi'}, 'Accept: application/cpl+xml: the CPL script only');
    $r = preg(user => $v, headers => [ Accept => 'multipart/mixed, */*, application/x-perl;q=0', 'Accept-Disposition' => '*' ]);
    $m = by_type(scripts_of($r));
    ok($m->{script} && !$m->{'sip-cgi'}, 'application/x-perl;q=0: not the Perl script');
    $r = preg(user => $v, headers => [ Accept => '' , 'Accept-Disposition' => '*' ]);
    is(nscripts($r), 0, 'an empty Accept: nothing');
    $r = preg(user => $v);
    is(nscripts($r), 0, 'neither Accept nor Accept-Disposition: nothing (G3)');
};

subtest 'RP-28, RP-29: error responses carry no scripts; REGISTER and OPTIONS responses advertise' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    my $r = preg(user => $v, contacts => [ "<sip:$v\@127.0.0.1:5629>" ], headers => [ Expires => 'soon', Accept => '*/*', 'Accept-Disposition' => '*' ]);
    is($r && $r->code, 400, 'Expires: soon -> 400');
    is($r && length($r->body), 0, '... no script in it');
    ok($r && $r->header('accept') && $r->header('accept-disposition'), '... Accept and Accept-Disposition');
    $r = preg(user => $v, contacts => [ "<sip:$v\@127.0.0.1:5629>;expires=0" ], headers => [ Accept => '*/*', 'Accept-Disposition' => '*' ]);
    is($r && $r->code, 200, 'a 200 ...');
    ok($r && $r->header('accept') && $r->header('accept-disposition'), '... Accept and Accept-Disposition');
    my $ouri = "sip:127.0.0.1:$port";
    my @x = $t->transact('udp', method => 'OPTIONS', uri => $ouri, sock => $t->udp_socket,
                         headers => [ Authorization => digest_credentials(challenge => $ch, user => $v, password => $pw{$v},
                                                                          method => 'OPTIONS', uri => $ouri) ]);
    $r = $x[-1];
    is($r && $r->code, 200, 'OPTIONS to the server: 200');
    like($r && $r->header('accept') // '', qr{application/sdp.*application/cpl\+xml}, '... Accept lists SDP and CPL');
    is($r && $r->header('accept-disposition'), 'script, sip-cgi', '... and Accept-Disposition');
    @x = $t->transact('udp', method => 'OPTIONS', uri => "sip:open\@127.0.0.1:$port", sock => $t->udp_socket);
    is($x[-1] && $x[-1]->header('accept-disposition'), 'script, sip-cgi', 'OPTIONS to a user without binding: the same');
    my $offuri = "sip:off\@127.0.0.1:$port";
    @x = $t->transact('udp', method => 'OPTIONS', uri => $offuri, sock => $t->udp_socket,
                      headers => [ Authorization => digest_credentials(challenge => $ch, user => $v, password => $pw{$v},
                                                                       method => 'OPTIONS', uri => $offuri) ]);
    is($x[-1] && $x[-1]->code, 200, 'OPTIONS to sip:off (SipScriptUpload Off there): 200');
    is($x[-1] && $x[-1]->header('accept-disposition'), undef, 'OPTIONS for a user under SipScriptUpload Off: none');
};

subtest 'RP-30: scripts survive graceful restart and stop/start' => sub {
    my $v = newuser();
    store($v, 'script', $cpl);
    store($v, 'sip-cgi', $perl);
    my $before = stored($v);
    ok($t->apachectl('graceful'), 'apache2 -k graceful');
    ok(wait_until(10, sub { alive() }, 0.2), 'answering again');
    $ch = challenge_of($t, 'alice');
    my $after = stored($v);
    is($after->{script}{body}, $cpl, 'the CPL script is there');
    is($after->{'sip-cgi'}{mdate}, $before->{'sip-cgi'}{mdate}, '... and the SIP-CGI one, same modification-date');
    $t->stop;
    $t->start;
    $ch = challenge_of($t, 'alice');
    $after = stored($v);
    is($after->{script}{body}, $cpl, 'after stop/start: the CPL script is there');
    is($after->{'sip-cgi'}{body}, $perl, '... and the SIP-CGI one');
    is($after->{script}{mdate}, $before->{script}{mdate}, '... with its modification-date');
};

subtest 'RP-31: a script stays when every binding is removed' => sub {
    my $v = newuser();
    store($v, 'script', $cpl, contacts => [ "<sip:$v\@127.0.0.1:5631>" ], expires => 600);
    my $r = preg(user => $v, contacts => [ '*' ], expires => 0);
    is($r && $r->code, 200, 'Contact: *, Expires: 0 -> 200');
    is(scalar(keys %{ bindings($v) }), 0, 'no binding left');
    is(stored($v)->{script}{body}, $cpl, 'the script is still there');
};

subtest 'RP-32: changes need credentials; alice cannot touch bob\'s scripts' => sub {
    store('bob', 'script', $cpl);
    my $r = preg(user => 'bob', cd => 'script;action=remove', noauth => 1);
    is($r && $r->code, 401, 'remove without credentials -> 401');
    is(stored('bob')->{script}{body}, $cpl, '... bob\'s script stays');
    (my $evil = $cpl) =~ s/busy/error/;
    $r = store('bob', 'script', $evil, as => 'alice');
    is($r && $r->code, 403, 'alice uploading for bob -> 403');
    is($r && $r->header('accept-disposition'), 'script, sip-cgi', '... with Accept-Disposition (RP-29)');
    is(stored('bob')->{script}{body}, $cpl, '... bob\'s script unchanged');
    $r = preg(user => 'bob', as => 'alice', headers => [ 'Accept-Disposition' => '*', Accept => '*/*' ]);
    is($r && $r->code, 403, 'alice downloading bob\'s scripts -> 403');
    is($r && length($r->body), 0, '... nothing in it');
    # a <Location> with SipAuth Off: no digest user at all
    my $mark = $t->log_mark;
    $r = store('open', 'script', $cpl, noauth => 1, contacts => [ '<sip:open@127.0.0.1:5632>' ], expires => 600);
    is($r && $r->code, 403, 'upload where no SipAuth applies -> 403');
    ok($t->wait_log($mark, qr/SipScriptUpload needs SipAuth/), '... logged: SipScriptUpload needs SipAuth');
    $r = preg(user => 'open', noauth => 1, headers => [ 'Accept-Disposition' => '*', Accept => '*/*' ]);
    is($r && $r->code, 200, 'a plain REGISTER there still works');
    is(scalar(keys %{ { SipRegTest::binding_map($r) } }), 0, '... and the refused one bound nothing');
    is(nscripts($r), 0, '... and downloads nothing');
};

subtest 'limits: oversized script and user total (413)' => sub {
    my $v = newuser();
    my $big = "#!/bin/sh\n" . ('#' x 79 . "\n") x 25;     # 2010 bytes > SipScriptUploadMaxSize 2000
    my $mark = $t->log_mark;
    my $r = store($v, 'sip-cgi', $big, transport => 'tcp', contacts => [ "<sip:$v\@127.0.0.1:5640>" ], expires => 600);
    is($r && $r->code, 413, 'a 2010-byte script (max 2000) -> 413');
    like($r && $r->header('warning') // '', qr/SipScriptUploadMaxSize/, '... a Warning names the limit');
    ok($t->wait_log($mark, qr/SipScriptUploadMaxSize/), '... logged');
    is(scalar(keys %{ stored($v) }), 0, '... nothing stored');
    is(scalar(keys %{ bindings($v) }), 0, '... no binding');
    my $s1 = "#!/bin/sh\n" . ('#' x 79 . "\n") x 19;       # 1530 bytes
    my $c1 = "<cpl xmlns='urn:ietf:params:xml:ns:cpl'>" . ('<!-- pad -->' x 130) . "</cpl>";   # 1606 bytes
    is(store($v, 'sip-cgi', $s1, transport => 'tcp')->code, 200, 'a 1530-byte script -> 200');
    $r = store($v, 'script', $c1, transport => 'tcp');
    is($r && $r->code, 413, 'a 1606-byte second script: over SipScriptUploadMaxTotal 3000 -> 413');
    is(scalar(keys %{ stored($v) }), 1, '... only the first stays');
    is(store($v, 'sip-cgi', $s1, transport => 'tcp')->code, 200, 'replacing the first with as much is fine');
};

subtest 'disallowed interpreter: 415 with an explanation' => sub {
    my $v = newuser();
    my $r = store($v, 'sip-cgi', "#!/usr/bin/ruby\nputs 1\n", ctype => 'application/x-ruby',
                  headers => [ Accept => 'text/plain' ]);
    is($r && $r->code, 415, '#!/usr/bin/ruby -> 415');
    like($r && $r->header('warning') // '', qr{/usr/bin/ruby.*SipUploadInterpreters}, '... Warning names it');
    like($r && $r->body, qr{not allowed}, '... text/plain explanation');
    $r = store($v, 'sip-cgi', "echo no shebang\n", ctype => 'application/x-sh');
    is($r && $r->code, 415, 'no #! line -> 415');
    is(scalar(keys %{ stored($v) }), 0, 'nothing stored');
};

subtest 'malformed bodies: 400, nothing stored, the engine keeps answering' => sub {
    my $v = newuser();
    my $engine = $t->engine_pid;
    my @bad = (
        [ 'multipart without close delimiter', 'multipart/mixed;boundary=zz',
          "--zz\r\nContent-Disposition: script;action=store\r\nContent-Type: application/cpl+xml\r\n\r\n$cpl" ],
        [ 'multipart without boundary parameter', 'multipart/mixed', "--zz\r\n\r\nx\r\n--zz--\r\n" ],
        [ 'multipart whose delimiter never comes', 'multipart/mixed;boundary=zz', "just text\r\n" ],
        [ 'multipart part with a header line without colon', 'multipart/mixed;boundary=zz',
          "--zz\r\nContent-Disposition script\r\n\r\nx\r\n--zz--\r\n" ],
    );
    for my $b (@bad) {
        refused_cleanly($v, preg(user => $v, ctype => $b->[1], body => $b->[2], contacts => [ "<sip:$v\@127.0.0.1:5650>" ],
                                 expires => 600), 400, $b->[0]);
    }
    for my $cd ('sip-cgi;;action=store', '"sip-cgi";action=store', 'sip-cgi;action=store;action=remove',
                'sip-cgi;action="store', 'sip cgi;action=store') {
        refused_cleanly($v, preg(user => $v, cd => $cd, ctype => 'application/x-perl', body => $perl,
                                 contacts => [ "<sip:$v\@127.0.0.1:5650>" ], expires => 600), 400, "Content-Disposition: $cd");
    }
    is($t->engine_pid, $engine, 'the same engine is running');
    ok(alive('udp') && alive('tcp'), 'and answers over UDP and TCP');
};

subtest 'UDP size: scripts that do not fit are left out with a Warning' => sub {
    my $v = newuser();
    my $big = "#!/bin/sh\n" . ('#' x 79 . "\n") x 19;      # 1530 bytes
    is(store($v, 'sip-cgi', $big, transport => 'tcp')->code, 200, 'a 1530-byte script stored over TCP');
    my $mark = $t->log_mark;
    my $r = preg(user => $v, contacts => [ "<sip:$v\@127.0.0.1:5660>" ], expires => 600,
                 headers => [ Accept => '*/*', 'Accept-Disposition' => '*' ]);
    is($r && $r->code, 200, 'a REGISTER over UDP asking for it -> 200');
    is(nscripts($r), 0, '... without the script');
    like($r && $r->header('warning') // '', qr/^399 .*TCP/, '... a Warning says to use TCP');
    ok(SipRegTest::binding_map($r), '... the Contact is listed');
    ok(length($r->raw) <= 1300, '... the datagram is within 1300 bytes (' . length($r->raw) . ')');
    ok($t->wait_log($mark, qr/over UDP would be \d+ bytes/), '... logged');
    $r = preg(user => $v, transport => 'tcp', headers => [ Accept => '*/*', 'Accept-Disposition' => '*' ]);
    is(nscripts($r), 1, 'over TCP the script comes');
};

# ---- a second server: no SipUploadUser, and one with SipScriptUpload off
my $t2 = SipRegTest->new(digest_server(realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/store' ],
    location => [ 'SipScriptUpload On' ],
    after => [ '<Location "/u90@127.0.0.1">', '    SipScriptUpload Off', '</Location>' ]));
my $ch2 = challenge_of($t2, 'u89');
subtest 'without SipUploadUser: sip-cgi refused (415), CPL taken' => sub {
    my $r = store('u89', 'sip-cgi', $perl, server => $t2, challenge => $ch2);
    is($r && $r->code, 415, 'sip-cgi upload -> 415');
    is($r && $r->header('accept-disposition'), 'script', '... Accept-Disposition: script only');
    $r = store('u89', 'script', $cpl, server => $t2, challenge => $ch2);
    is($r && $r->code, 200, 'CPL upload -> 200');
};
subtest 'SipScriptUpload Off: an upload is refused (415), a plain REGISTER is not' => sub {
    my $r = store('u90', 'script', $cpl, server => $t2, challenge => $ch2,
                  contacts => [ '<sip:u90@127.0.0.1:5670>' ], expires => 600);
    is($r && $r->code, 415, 'script upload -> 415');
    is($r && $r->header('accept-disposition'), undef, '... and no Accept-Disposition');
    $r = preg(user => 'u90', server => $t2, challenge => $ch2, contacts => [ '<sip:u90@127.0.0.1:5670>' ], expires => 600,
              ctype => 'text/plain', body => "a body nobody asked about\n");
    is($r && $r->code, 200, 'a REGISTER with some other body is served as before');
    is($r && $r->header('accept-disposition'), undef, '... without Accept-Disposition');
};
$t2->stop;

# ---- RP-33: SipScriptUploadIntegrity On
my $t3 = SipRegTest->new(digest_server(realm => $realm, users => \%pw,
    conf => [ 'SipScriptStore @DIR@/store', 'SipUploadUser nobody' ],
    location => [ 'SipScriptUpload On' ], vhost_conf => 'SipScriptUploadIntegrity On'));
subtest 'RP-33: SipScriptUploadIntegrity: qop=auth uploads refused, auth-int taken' => sub {
    my $ch3 = challenge_of($t3, 'u88');
    like($ch3->{qop} // '', qr/^auth,auth-int$/, 'the REGISTER challenge offers qop="auth,auth-int"');
    my $mark = $t3->log_mark;
    my $r = store('u88', 'script', $cpl, server => $t3, challenge => $ch3, contacts => [ '<sip:u88@127.0.0.1:5680>' ],
                  expires => 600);
    is($r && $r->code, 401, 'upload with qop=auth -> 401');
    my $c = digest_challenge($r, 'www-authenticate');
    is($c && $c->{qop}, 'auth-int', '... offering qop="auth-int"');
    ok($t3->wait_log($mark, qr/SipScriptUploadIntegrity wants auth-int/), '... logged');
    $r = preg(user => 'u88', server => $t3, challenge => $ch3, headers => [ 'Accept-Disposition' => '*' ]);
    is($r && $r->code, 200, 'a REGISTER without script changes: qop=auth is enough');
    is(scalar(keys %{ { SipRegTest::binding_map($r) } }), 0, '... the refused upload bound nothing');
    is(nscripts($r), 0, '... and stored nothing');
    (my $other = $cpl) =~ s/busy/error/;
    $r = store('u88', 'script', $cpl, server => $t3, challenge => $c, qop => 'auth-int', signed_body => $other);
    is($r && $r->code, 401, 'auth-int over another body (tampered on the way) -> 401');
    $r = store('u88', 'script', $cpl, server => $t3, challenge => $c, qop => 'auth-int',
               headers => [ 'Accept-Disposition' => '*', Accept => '*/*' ]);
    is($r && $r->code, 200, 'upload with qop=auth-int -> 200');
    is((scripts_of($r))[0]{body}, $cpl, '... stored');
    $r = preg(user => 'u88', server => $t3, challenge => $c, cd => 'script;action=remove');
    is($r && $r->code, 401, 'a remove with qop=auth -> 401 too');
    $r = preg(user => 'u88', server => $t3, challenge => $c, cd => 'script;action=remove', qop => 'auth-int');
    is($r && $r->code, 200, '... and with auth-int -> 200');
};
$t3->stop;

# ---- the database store (SipLocation dbd on SQLite): the same, through the DB thread
SKIP: {
    my $MODDIR = $SipTest::MODDIR;
    skip 'mod_dbd not installed', 1 unless -e "$MODDIR/mod_dbd.so";
    my $dbdir = $t->dir . '/db';
    mkdir $dbdir;
    chmod 0777, $dbdir;
    my $t4 = SipRegTest->new(digest_server(realm => $realm, users => \%pw,
        conf => [ "LoadModule dbd_module $MODDIR/mod_dbd.so", 'DBDriver sqlite3', "DBDParams \"$dbdir/loc.db\"",
                  'SipLocation dbd', 'SipUploadUser nobody' ],
        location => [ 'SipScriptUpload On' ]));
    subtest 'SipLocation dbd: upload, download, 412, refusal changes nothing, restart' => sub {
        my $c4 = challenge_of($t4, 'u87');
        my %o = (server => $t4, challenge => $c4);
        my $r = store('u87', 'script', $cpl, %o, contacts => [ '<sip:u87@127.0.0.1:5690>' ], expires => 600,
                      headers => [ 'Accept-Disposition' => 'script' ]);
        is($r && $r->code, 200, 'upload -> 200');
        my @s = scripts_of($r);
        is(@s && $s[0]{body}, $cpl, '... and the 200 carries it');
        my $md = $s[0]{mdate};
        next_second();
        (my $new = $cpl) =~ s/busy/error/;
        is(store('u87', 'script', $new, %o)->code, 200, 'a replacement -> 200');
        $r = store('u87', 'script', $cpl, %o, contacts => [ '<sip:u87@127.0.0.1:5691>' ], expires => 600,
                   headers => [ 'If-Unmodified-Since' => $md ]);
        is($r && $r->code, 412, 'the old date -> 412');
        $r = preg(user => 'u87', %o, transport => 'tcp', headers => [ 'Accept-Disposition' => '*' ]);
        is((scripts_of($r))[0]{body}, $new, 'the replacement is stored');
        is(join(' ', sort keys %{ { SipRegTest::binding_map($r) } }), 'sip:u87@127.0.0.1:5690',
           'the 412 bound nothing (same transaction)');
        $t4->stop;
        $t4->start;
        $o{challenge} = challenge_of($t4, 'u87');
        $r = preg(user => 'u87', %o, transport => 'tcp', headers => [ 'Accept-Disposition' => '*' ]);
        is((scripts_of($r))[0]{body}, $new, 'after stop/start: still there');
    };
    $t4->stop;
}

$t->stop;
done_testing;

# RFC 1123 date -> epoch seconds
sub str2time {
    my ($d) = @_;
    my %mon = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5, Jul => 6, Aug => 7, Sep => 8,
               Oct => 9, Nov => 10, Dec => 11);
    return 0 unless $d =~ /^\w{3}, (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/;
    local $ENV{TZ} = 'UTC';
    POSIX::tzset();
    return POSIX::mktime($6, $5, $4, $1, $mon{$2}, $3 - 1900);
}
