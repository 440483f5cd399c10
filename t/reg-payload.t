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
my %pw = (carol => 'c-pw', alice => 'a-pw', bob => 'b-pw', dave => 'd-pw', erin => 'e-pw',
          frank => 'f-pw', gina => 'g-pw', hugo => 'h-pw', ivan => 'i-pw', judy => 'j-pw',
          kate => 'k-pw', liam => 'l-pw', mona => 'm-pw', nick => 'n-pw', olga => 'o-pw',
          paul => 'p-pw', quin => 'q-pw', rita => 'r-pw', sam => 's-pw', tom => 't-pw',
          uma => 'u-pw', vic => 'v-pw', walt => 'w-pw', xena => 'x-pw', yves => 'y-pw',
          zoe => 'z-pw', noauth => 'na-pw');

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

# one challenge for the whole test: nonce-counts keep rising
my $ch;
{
    my @r = $t->transact('udp', method => 'REGISTER', uri => $reg_uri, to => '<' . $t->aor('carol') . '>',
                         from => '<' . $t->aor('carol') . '>;tag=x1', sock => $t->udp_socket);
    $ch = digest_challenge($r[-1], 'www-authenticate');
    die "no challenge" unless $ch;
}

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
    my $to = '<' . $t->aor($user) . '>';
    my $tr = $o{transport} // 'udp';
    my @h;
    push @h, Contact => $_ for @{ $o{contacts} || [] };
    push @h, Expires => $o{expires} if defined $o{expires};
    push @h, 'Content-Disposition' => $o{cd} if defined $o{cd};
    push @h, Authorization => digest_credentials(challenge => $ch, user => $as, password => $pw{$as},
                                                 method => 'REGISTER', uri => $reg_uri)
        unless $o{noauth};
    push @h, @{ $o{headers} || [] };
    my @r = eval {
        $t->transact($tr, method => 'REGISTER', uri => $reg_uri, to => $to,
                     from => "$to;tag=" . rand_token(8), call_id => $o{call_id} // (rand_token(16) . '@pl'),
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

for my $tr (qw(udp tcp)) {
    my $u = $tr eq 'udp' ? 'carol' : 'dave';
    subtest "T1 ($tr): upload a SIP-CGI script with a contact" => sub {
        my $r = preg(user => $u, transport => $tr, contacts => [ "<sip:$u\@127.0.0.1:5601>" ], expires => 1800,
                     headers => [ Accept => 'application/x-perl, application/sdp, text/html',
                                  'Accept-Disposition' => 'sip-cgi' ],
                     ctype => 'application/x-perl', cd => 'sip-cgi; action=store', body => $perl);
        is($r && $r->code, 200, '200 OK');
        my %b = SipRegTest::binding_map($r);
        ok($b{"sip:$u\@127.0.0.1:5601"}, 'the binding is listed');
        my @s = scripts_of($r);
        is(scalar @s, 1, 'the stored script comes back (Accept and Accept-Disposition allow it)');
        is($s[0]{type}, 'sip-cgi', '... as sip-cgi');
        is($s[0]{body}, $perl, '... byte for byte');
        like($s[0]{ctype} // '', qr{^application/x-perl}i, '... with its Content-Type');
    };
    subtest "T2 ($tr): a later REGISTER returns the current script" => sub {
        my $r = preg(user => $u, transport => $tr, contacts => [ "<sip:$u\@127.0.0.1:5602>" ], expires => 1800,
                     headers => [ Accept => 'application/x-perl, application/sdp, text/html',
                                  'Accept-Disposition' => 'sip-cgi' ]);
        is($r && $r->code, 200, '200 OK');
        my %b = SipRegTest::binding_map($r);
        ok($b{"sip:$u\@127.0.0.1:5601"} && $b{"sip:$u\@127.0.0.1:5602"}, 'both contacts listed');
        like($r->header('accept') // '', qr{application/cpl\+xml}, 'Accept advertised');
        like($r->header('accept-disposition') // '', qr{\bscript\b.*\bsip-cgi\b}, 'Accept-Disposition: script, sip-cgi');
        my @s = scripts_of($r);
        is(scalar @s, 1, 'one script in the body');
        is($s[0]{body}, $perl, 'the Perl script');
        ok($s[0]{mdate} && SipTest::Msg->can('parse'), 'Content-Disposition has modification-date');
        unlike($s[0]{cd}, qr/action/i, '... and no action');
    };
    subtest "T3 ($tr): remove the script" => sub {
        my $r = preg(user => $u, transport => $tr, cd => 'sip-cgi; action=remove',
                     headers => [ 'Accept-Disposition' => 'sip-cgi, script' ]);
        is($r && $r->code, 200, '200 OK');
        ok($r && $r->header('accept') && defined $r->header('accept-disposition'), 'Accept and Accept-Disposition');
        is($r && length($r->body), 0, 'no body');
        my %b = SipRegTest::binding_map($r);
        is(scalar keys %b, 2, 'bindings untouched');
        $r = preg(user => $u, transport => $tr, headers => [ 'Accept-Disposition' => '*' ]);
        is(nscripts($r), 0, 'a later download has no script');
    };
}

$t->stop;
done_testing;
