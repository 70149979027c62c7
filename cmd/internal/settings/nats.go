package settings

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
)

// NATS is how every command reaches NATS: where the servers are, how the
// connection is secured, which credentials it presents, or the `nats` CLI
// context that says so. AddNATS binds the fields to NATS_URL, NATS_CREDS,
// NATS_TLS_CA, ... Check reads every file they name, so that a bad one is
// refused before anything connects, and merges the context; a checked NATS
// is a cli.NATSTarget.
//
// A setting given explicitly (variable or flag) overrides the same field of
// the context: NATS_URL its url (NATS_URL's default does not), NATS_TLS_CA
// its ca, NATS_TLS_CERT and NATS_TLS_KEY, as a pair, its cert and key, and
// credentials of the kind the context has (NATS_USER its user,
// NATS_PASSWORD or NATS_PASSWORD_FILE its password, NATS_CREDS its creds,
// NATS_NKEY its nkey). Credentials of another kind than the context's are
// refused, as two kinds given by settings are: the client would present
// two identities, and which one the server goes by is not for a reader of
// the configuration to guess.
type NATS struct {
	URL                    string
	Context                string
	Creds                  string
	NKey                   string
	User                   string
	Password               string
	PasswordFile           string
	TLSCA, TLSCert, TLSKey string

	// url is NATS_URL's Setting: a context's url wins over its default,
	// not over a value given. nil (a NATS not built by AddNATS): URL is
	// given when it is not empty.
	url *Setting
	// conn is what Check built; err what it refused.
	conn *natsConn
	err  error
}

// AddNATS adds the connection settings every subcommand shares, and their
// check (see NATS.Check), which Command and LoadRun run.
func AddNATS(s *Set, n *NATS) {
	n.url = s.Str(&n.URL, "NATS_URL", "nats-url", nats.DefaultURL, "NATS server URL; several, comma-separated, for a cluster")
	n.url.urls = true
	s.Str(&n.Context, "NATS_CONTEXT", "nats-context", "", "nats CLI context: a name in $XDG_CONFIG_HOME/nats/context, or a .json path; NATS_* settings given override its fields")
	s.Str(&n.Creds, "NATS_CREDS", "nats-creds", "", "NATS credentials file (user JWT and seed)")
	s.Str(&n.NKey, "NATS_NKEY", "nats-nkey", "", "file holding an NKey user seed")
	s.Str(&n.User, "NATS_USER", "nats-user", "", "NATS user, with NATS_PASSWORD or NATS_PASSWORD_FILE")
	s.Str(&n.Password, "NATS_PASSWORD", "nats-password", "", "password of NATS_USER (prefer the variable or the file: flags show in ps)").secret = true
	s.Str(&n.PasswordFile, "NATS_PASSWORD_FILE", "nats-password-file", "", "file holding the password of NATS_USER, read again at each reconnect")
	s.Str(&n.TLSCA, "NATS_TLS_CA", "nats-tls-ca", "", "PEM file of the CA that signed the server's certificate, trusted instead of the system's CAs")
	s.Str(&n.TLSCert, "NATS_TLS_CERT", "nats-tls-cert", "", "client certificate (PEM) for mutual TLS, with NATS_TLS_KEY")
	s.Str(&n.TLSKey, "NATS_TLS_KEY", "nats-tls-key", "", "private key (PEM) of NATS_TLS_CERT")
	s.checks = append(s.checks, n.Check)
}

// Check merges NATS_CONTEXT's fields with the settings, refuses what
// cannot work and reads every file named: the CA (each certificate must
// parse), the client certificate and its key (they must parse and match),
// the NKey seed, the credentials file and the password file (none may be
// missing, a directory, unreadable, empty or oversized). Every error names
// the setting, or the context's field; none shows a secret. getenv finds
// the context directory (XDG_CONFIG_HOME, HOME) and expands $VAR and ~ in
// a context's paths, as the nats CLI does.
func (n *NATS) Check(getenv func(string) string) []error {
	n.conn, n.err = nil, nil
	c, errs := n.resolve(getenv)
	if c != nil {
		errs = append(errs, c.load()...)
	}
	if len(errs) > 0 {
		n.err = errors.Join(errs...)
		return errs
	}
	n.conn = c
	return nil
}

// Servers is the comma list of server URLs: NATS_URL, or the context's
// url when NATS_URL is left at its default. It may hold a password: log it
// through cli.RedactURLs.
func (n *NATS) Servers() string {
	if n.conn != nil {
		return n.conn.url.value
	}
	return n.URL
}

// noteContext shows in eff, the effective configuration, the servers a
// context gave, as NATS_URL's value: its default is not what is used.
func (n *NATS) noteContext(eff map[string]string) {
	if n.conn != nil && n.conn.url.from != "NATS_URL" {
		eff["NATS_URL"] = cli.RedactURLs(n.conn.url.value) + " (NATS_CONTEXT)"
	}
}

// Options are the TLS and credential options Check built; an error if it
// refused the settings or was not run.
func (n *NATS) Options() ([]nats.Option, error) {
	switch {
	case n.err != nil:
		return nil, n.err
	case n.conn == nil:
		return nil, errors.New("the NATS settings were not checked")
	}
	return slices.Clone(n.conn.opts), nil
}

// Explain is err, an error of connecting, with what it means in terms of
// the settings: a server certificate that the CA did not sign, a client
// certificate the server refused, credentials it rejected.
func (n *NATS) Explain(err error) error {
	c := n.conn
	if c == nil || err == nil {
		return err
	}
	var (
		unknownCA x509.UnknownAuthorityError
		wrongHost x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknownCA) && c.ca.set():
		return fmt.Errorf("%s: the server's certificate is not signed by this CA: %w", c.ca.from, err)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("the server's certificate is not signed by a CA this host trusts; set NATS_TLS_CA to the PEM file of the CA that signed it: %w", err)
	case errors.As(err, &wrongHost):
		return fmt.Errorf("%s: the server's certificate is not for the host in the URL: %w", c.url.from, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("the server's certificate is not valid (expired, or not for a server): %w", err)
	case refusedHandshake(err) && c.cert.set():
		// With a client certificate that is almost always because the
		// server does not trust its issuer (TLS 1.3 then says "certificate
		// required": the client, asked for one from CAs it has none from,
		// sends none).
		return fmt.Errorf("%s: the server refused the TLS handshake: is this certificate issued by a CA the server trusts? %w", c.cert.from, err)
	case refusedHandshake(err):
		return fmt.Errorf("the server refused the TLS handshake; if it verifies clients, set NATS_TLS_CERT and NATS_TLS_KEY: %w", err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("%s: TLS is wanted but the server does not offer it: %w", c.tlsFrom(), err)
	case errors.Is(err, nats.ErrAuthorization) && c.credentials != "":
		return fmt.Errorf("the server refused the credentials of %s: %w", c.credentials, err)
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("the server wants credentials: set NATS_CREDS, NATS_NKEY, NATS_USER or NATS_CONTEXT: %w", err)
	}
	return err
}

var _ cli.NATSTarget = (*NATS)(nil)

// refusedHandshake reports whether the server ended the TLS handshake: a
// TLS alert it sent, or, as nats.go reports it, the connection closed
// right after the client's part of the handshake (which of the two the
// client sees depends on timing).
func refusedHandshake(err error) bool {
	var alert *net.OpError
	if errors.As(err, &alert) && alert.Op == "remote error" {
		return true
	}
	return errors.Is(err, nats.ErrTLS) &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET))
}

// field is one setting as merged: its value, and what an operator reads
// for where it came from: "NATS_TLS_CA", or
// "NATS_CONTEXT (/home/ops/.config/nats/context/prod.json): ca".
type field struct {
	value, from string
	// refused: the context's field is set, to what cannot be used; its
	// error is reported already.
	refused bool
}

func (f field) set() bool { return f.value != "" }

// natsConn is the connection's settings once merged, and the options
// built from them.
type natsConn struct {
	url                          field
	ca, cert, key                field
	creds, nkey                  field
	user, password, passwordFile field
	tlsFirst                     field // value "true" when set
	inboxPrefix                  field
	// credentials names the settings of the credentials, for the message
	// of a rejection: "NATS_USER and NATS_PASSWORD_FILE".
	credentials string
	opts        []nats.Option
}

// tlsFrom names a setting that asks for TLS, for the message of a server
// that offers none.
func (c *natsConn) tlsFrom() string {
	for _, f := range []field{c.ca, c.cert, c.tlsFirst} {
		if f.set() {
			return f.from
		}
	}
	return c.url.from
}

// maxNATSFile bounds a file the settings name: a CA bundle is the largest.
const maxNATSFile = 1 << 20

// maxSecretFile bounds a password file, as the Tallyfy secret files are.
const maxSecretFile = 64 << 10

// resolve merges the context and the settings, and refuses combinations
// that cannot work. Files other than the context's are not read yet.
func (n *NATS) resolve(getenv func(string) string) (*natsConn, []error) {
	var ctx natsContext
	if n.Context != "" {
		var err error
		if ctx, err = loadContext(n.Context, getenv); err != nil {
			return nil, []error{err}
		}
	}
	c := &natsConn{}
	var errs []error
	// pick is the setting when given, else the context's field; a field
	// the context has but tallyfy-deleter cannot read is refused only
	// when it is used.
	pick := func(value, env, ctxValue, ctxField string) field {
		switch {
		case value != "":
			return field{value: value, from: env}
		case ctxValue != "":
			if err := ctx.refused[ctxField]; err != nil {
				errs = append(errs, err)
				return field{from: ctx.from(ctxField), refused: true}
			}
			return field{value: ctxValue, from: ctx.from(ctxField)}
		}
		return field{}
	}

	urlGiven := n.URL != "" && (n.url == nil || n.url.from != "default")
	switch {
	case urlGiven || ctx.URL == "":
		c.url = field{value: n.URL, from: "NATS_URL"}
		if c.url.value == "" {
			c.url.value = nats.DefaultURL
		}
	default:
		c.url = field{value: ctx.URL, from: ctx.from("url")}
	}
	errs = append(errs, checkURLs(c.url)...)

	c.ca = pick(n.TLSCA, "NATS_TLS_CA", ctx.CA, "ca")
	if n.TLSCert != "" || n.TLSKey != "" {
		c.cert, c.key = field{value: n.TLSCert, from: "NATS_TLS_CERT"}, field{value: n.TLSKey, from: "NATS_TLS_KEY"}
	} else {
		c.cert, c.key = pick("", "", ctx.Cert, "cert"), pick("", "", ctx.Key, "key")
	}
	switch {
	case c.cert.set() && !c.key.set():
		errs = append(errs, fmt.Errorf("%s is set but %s is not: a client certificate needs its key", c.cert.from, keyName(c.cert)))
	case c.key.set() && !c.cert.set():
		errs = append(errs, fmt.Errorf("%s is set but %s is not: a key needs its certificate", c.key.from, certName(c.key)))
	}
	if ctx.TLSFirst {
		c.tlsFirst = field{value: "true", from: ctx.from("tls_first")}
	}
	c.inboxPrefix = pick("", "", ctx.InboxPrefix, "inbox_prefix")

	kinds, err := n.credentialKind(ctx)
	if err != nil {
		return c, append(errs, err)
	}
	switch kinds {
	case "creds":
		c.creds = pick(n.Creds, "NATS_CREDS", ctx.Creds, "creds")
		c.credentials = c.creds.from
	case "nkey":
		c.nkey = pick(n.NKey, "NATS_NKEY", ctx.NKey, "nkey")
		c.credentials = c.nkey.from
	case "user":
		errs = append(errs, n.resolveUser(c, ctx, pick)...)
	}
	if c.credentials != "" {
		for _, u := range splitURLs(c.url.value) {
			if p, err := parseNATSURL(u); err == nil && p.User != nil {
				errs = append(errs, fmt.Errorf("%s holds credentials (%s) and %s is set too: set one", c.url.from, cli.RedactURLs(u), c.credentials))
				break
			}
		}
	}
	return c, errs
}

// credentialKind is the one kind of credentials set, by the settings or
// the context ("creds", "nkey", "user"; "" for none), or why several are.
func (n *NATS) credentialKind(ctx natsContext) (string, error) {
	given := kindsSet(map[string][]string{
		"creds": {n.Creds},
		"nkey":  {n.NKey},
		"user":  {n.User, n.Password, n.PasswordFile},
	})
	inContext := kindsSet(map[string][]string{
		"creds": {ctx.Creds},
		"nkey":  {ctx.NKey},
		"user":  {ctx.User, ctx.Password},
	})
	names := map[string]string{"creds": "NATS_CREDS", "nkey": "NATS_NKEY", "user": "NATS_USER with a password"}
	switch {
	case len(given) > 1:
		var set []string
		for _, k := range given {
			set = append(set, names[k])
		}
		return "", fmt.Errorf("more than one kind of NATS credentials: %s; set one", strings.Join(set, " and "))
	case len(inContext) > 1:
		return "", fmt.Errorf("%s: more than one kind of credentials (%s); keep one", ctx.from(""), strings.Join(inContext, " and "))
	case len(given) == 1 && len(inContext) == 1 && given[0] != inContext[0]:
		return "", fmt.Errorf("%s and %s are two kinds of credentials: set one (a setting overrides the context's credentials of its own kind only)",
			names[given[0]], ctx.from(inContext[0]))
	case len(given) == 1:
		return given[0], nil
	case len(inContext) == 1:
		return inContext[0], nil
	}
	return "", nil
}

// kindsSet are the kinds with a value set, in a fixed order.
func kindsSet(values map[string][]string) []string {
	var out []string
	for _, kind := range []string{"creds", "nkey", "user"} {
		if slices.ContainsFunc(values[kind], func(v string) bool { return v != "" }) {
			out = append(out, kind)
		}
	}
	return out
}

// resolveUser merges a user and its password: the settings override the
// context's user and password one by one.
func (n *NATS) resolveUser(c *natsConn, ctx natsContext, pick func(value, env, ctxValue, ctxField string) field) []error {
	c.user = pick(n.User, "NATS_USER", ctx.User, "user")
	switch {
	case n.Password != "" && n.PasswordFile != "":
		return []error{errors.New("NATS_PASSWORD and NATS_PASSWORD_FILE are both set: set one")}
	case n.PasswordFile != "":
		c.passwordFile = field{value: n.PasswordFile, from: "NATS_PASSWORD_FILE"}
	default:
		c.password = pick(n.Password, "NATS_PASSWORD", ctx.Password, "password")
	}
	pw := c.password
	if c.passwordFile.set() {
		pw = c.passwordFile
	}
	switch {
	case c.user.refused || pw.refused:
		return nil
	case !c.user.set():
		return []error{fmt.Errorf("%s is set but NATS_USER is not: a password needs its user", pw.from)}
	case !pw.set():
		return []error{fmt.Errorf("%s is set but neither NATS_PASSWORD nor NATS_PASSWORD_FILE is", c.user.from)}
	}
	c.credentials = c.user.from + " and " + pw.from
	return nil
}

// keyName and certName name the other half of a pair, for the message of
// a half missing.
func keyName(cert field) string {
	if cert.from == "NATS_TLS_CERT" {
		return "NATS_TLS_KEY"
	}
	return "its key"
}

func certName(key field) string {
	if key.from == "NATS_TLS_KEY" {
		return "NATS_TLS_CERT"
	}
	return "its cert"
}

func splitURLs(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// parseNATSURL parses u as nats.go does: without a scheme, it is nats://.
func parseNATSURL(u string) (*url.URL, error) {
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	return url.Parse(u)
}

// checkURLs refuses what nats.go could not dial; the URLs are shown
// redacted.
func checkURLs(f field) []error {
	list := splitURLs(f.value)
	if len(list) == 0 {
		return []error{fmt.Errorf("%s: no server URL", f.from)}
	}
	for _, u := range list {
		p, err := parseNATSURL(u)
		switch {
		case err != nil:
			return []error{fmt.Errorf("%s: %s is not a URL", f.from, cli.RedactURLs(u))}
		case p.Scheme == "nsc":
			return []error{fmt.Errorf("%s: nsc:// URLs are not supported: give the servers' nats:// or tls:// URLs", f.from)}
		case !slices.Contains([]string{"nats", "tls", "ws", "wss"}, p.Scheme):
			return []error{fmt.Errorf("%s: %s is not a nats://, tls://, ws:// or wss:// URL", f.from, cli.RedactURLs(u))}
		case p.Host == "":
			return []error{fmt.Errorf("%s: %s names no host", f.from, cli.RedactURLs(u))}
		}
	}
	return nil
}

// load reads every file named and builds the options; each error names
// the setting. A CA, certificate, seed or credentials file is read again
// by nats.go at each (re)connect, so a rotated one is used without a
// restart; what is read here only proves that it can be.
func (c *natsConn) load() []error {
	var errs []error
	if c.ca.set() {
		if err := checkCA(c.ca); err != nil {
			errs = append(errs, err)
		} else {
			c.opts = append(c.opts, nats.RootCAs(c.ca.value))
		}
	}
	if c.cert.set() && c.key.set() {
		if err := checkKeyPair(c.cert, c.key); err != nil {
			errs = append(errs, err)
		} else {
			c.opts = append(c.opts, nats.ClientCert(c.cert.value, c.key.value))
		}
	}
	if c.tlsFirst.set() {
		c.opts = append(c.opts, nats.TLSHandshakeFirst())
	}
	if c.inboxPrefix.set() {
		opt := nats.CustomInboxPrefix(c.inboxPrefix.value)
		if err := opt(&nats.Options{}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a subject prefix (no wildcards, no trailing dot)", c.inboxPrefix.from, c.inboxPrefix.value))
		} else {
			c.opts = append(c.opts, opt)
		}
	}
	switch {
	case c.creds.set():
		if err := checkCreds(c.creds); err != nil {
			errs = append(errs, err)
		} else {
			c.opts = append(c.opts, nats.UserCredentials(c.creds.value))
		}
	case c.nkey.set():
		if _, err := readFile(c.nkey, maxSecretFile); err != nil {
			errs = append(errs, err)
		} else if opt, err := nats.NkeyOptionFromSeed(c.nkey.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: not an NKey user seed: %w", c.nkey.from, err))
		} else {
			c.opts = append(c.opts, opt)
		}
	case c.passwordFile.set():
		pw := &passwordFile{user: c.user.value, f: c.passwordFile}
		if _, err := pw.read(); err != nil {
			errs = append(errs, err)
		} else {
			c.opts = append(c.opts, nats.UserInfoHandler(pw.userInfo))
		}
	case c.user.set():
		c.opts = append(c.opts, nats.UserInfo(c.user.value, c.password.value))
	}
	return errs
}

// readFile reads a file a setting names, refusing one that is missing, a
// directory, unreadable, empty or larger than limit. The error names the
// setting and the path, never the contents.
func readFile(f field, limit int64) ([]byte, error) {
	file, err := os.Open(f.value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.from, err)
	}
	defer file.Close()
	info, err := file.Stat()
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", f.from, err)
	case info.IsDir():
		return nil, fmt.Errorf("%s: %s is a directory", f.from, f.value)
	}
	b, err := io.ReadAll(io.LimitReader(file, limit+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", f.from, err)
	case int64(len(b)) > limit:
		return nil, fmt.Errorf("%s: %s is larger than %d bytes", f.from, f.value, limit)
	case len(bytes.TrimSpace(b)) == 0:
		return nil, fmt.Errorf("%s: %s is empty", f.from, f.value)
	}
	return b, nil
}

// checkCA wants a PEM file of certificates only, each of which parses:
// x509.CertPool.AppendCertsFromPEM would skip a bad one in silence.
func checkCA(f field) error {
	b, err := readFile(f, maxNATSFile)
	if err != nil {
		return err
	}
	if _, err := parseCerts(b); err != nil {
		return fmt.Errorf("%s: %s: %w", f.from, f.value, err)
	}
	return nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s block, not only certificates", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return certs, nil
}

// checkKeyPair wants a certificate and a key that parse, each on its own
// so the error names the file at fault, and that match.
func checkKeyPair(certF, keyF field) error {
	certPEM, err := readFile(certF, maxNATSFile)
	if err != nil {
		return err
	}
	keyPEM, err := readFile(keyF, maxSecretFile)
	if err != nil {
		return err
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", certF.from, certF.value, err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", keyF.from, keyF.value, err)
	}
	type publicKey interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(publicKey); !ok || !pub.Equal(certs[0].PublicKey) {
		return fmt.Errorf("%s and %s: the certificate does not match the key", certF.from, keyF.from)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("%s and %s: %w", certF.from, keyF.from, err)
	}
	return nil
}

// parseKey parses the first private key of a PEM file as crypto/tls does;
// its errors never hold the key.
func parseKey(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			return nil, errors.New("no PEM private key in it")
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if _, encrypted := block.Headers["DEK-Info"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("the key is encrypted: give it unencrypted, in a file only this user can read")
		}
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if s, ok := k.(crypto.Signer); ok {
				return s, nil
			}
			return nil, fmt.Errorf("a %T key cannot sign", k)
		}
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k, nil
		}
		if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
			return k, nil
		}
		return nil, fmt.Errorf("the %s block does not parse as a PKCS #8, PKCS #1 or EC private key", block.Type)
	}
}

// checkCreds reads a credentials file the way nats.go will at connect:
// a user JWT and a seed that signs.
func checkCreds(f field) error {
	if _, err := readFile(f, maxSecretFile); err != nil {
		return err
	}
	var o nats.Options
	if err := nats.UserCredentials(f.value)(&o); err != nil {
		return fmt.Errorf("%s: %w", f.from, err)
	}
	jwt, err := o.UserJWT()
	if err == nil && (strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \n")) {
		// Without its header, nats.go takes the whole file for the JWT.
		err = errors.New("no user JWT in it (-----BEGIN NATS USER JWT-----)")
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w", f.from, f.value, err)
	}
	if _, err := o.SignatureCB([]byte("tallyfy-deleter")); err != nil {
		return fmt.Errorf("%s: no usable seed in it: %w", f.from, err)
	}
	return nil
}

// passwordFile is NATS_PASSWORD_FILE: read again at each (re)connect, so
// that a rotated secret is used without a restart; a read that fails then
// keeps the last password, and the server decides.
type passwordFile struct {
	user string
	f    field

	mu   sync.Mutex
	last string
}

func (p *passwordFile) read() (string, error) {
	b, err := readFile(p.f, maxSecretFile)
	if err != nil {
		return "", err
	}
	pw := strings.TrimRight(string(b), "\r\n")
	p.mu.Lock()
	p.last = pw
	p.mu.Unlock()
	return pw, nil
}

// userInfo is a nats.UserInfoCB.
func (p *passwordFile) userInfo() (string, string) {
	if pw, err := p.read(); err == nil {
		return p.user, pw
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.user, p.last
}

// natsContext is what tallyfy-deleter takes from a `nats` CLI context
// file: the connection, its TLS and one kind of credentials.
type natsContext struct {
	URL         string `json:"url"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	TLSFirst    bool   `json:"tls_first"`
	InboxPrefix string `json:"inbox_prefix"`

	path string
	// refused are the fields set to what tallyfy-deleter cannot read (an
	// op:// reference, say), and why.
	refused map[string]error
}

// from names a field of the context for an error; "" names the context.
func (c natsContext) from(name string) string {
	if name == "" {
		return fmt.Sprintf("NATS_CONTEXT (%s)", c.path)
	}
	return fmt.Sprintf("NATS_CONTEXT (%s): %s", c.path, name)
}

// contextFields are the fields of a context file that are read, or
// ignored because they do not change the connection (name, description
// and color_scheme: the CLI's own).
var contextFields = map[string]bool{
	"url": true, "creds": true, "nkey": true, "user": true, "password": true,
	"cert": true, "key": true, "ca": true, "tls_first": true, "inbox_prefix": true,
	"name": false, "description": false, "color_scheme": false,
}

// unsupported says why a context field that is set is refused: each
// changes how the connection is made or authenticated, so ignoring it
// would connect otherwise than the nats CLI does.
var unsupported = map[string]string{
	"token":                  "token authentication is not supported: use creds, nkey, or user and password",
	"user_jwt":               "a bare user JWT is not supported: use creds, a credentials file",
	"user_seed":              "a bare user seed is not supported: use creds or nkey",
	"nsc":                    "nsc lookups are not supported: point creds at the credentials file",
	"socks_proxy":            "a SOCKS proxy is not supported",
	"jetstream_domain":       "JetStream domains are not supported",
	"jetstream_api_prefix":   "JetStream API prefixes are not supported",
	"jetstream_event_prefix": "JetStream event prefixes are not supported",
	"windows_cert_store":     "the Windows certificate store is not supported: use cert, key and ca",
	"windows_cert_match_by":  "the Windows certificate store is not supported: use cert, key and ca",
	"windows_cert_match":     "the Windows certificate store is not supported: use cert, key and ca",
	"windows_ca_certs_match": "the Windows certificate store is not supported: use cert, key and ca",
}

// loadContext finds and reads a context: nameOrPath is a path when it has
// a path separator or ends in .json, else the name of a file in
// $XDG_CONFIG_HOME/nats/context (~/.config/nats/context).
func loadContext(nameOrPath string, getenv func(string) string) (natsContext, error) {
	path := nameOrPath
	if !strings.ContainsAny(nameOrPath, `/`+string(filepath.Separator)) && !strings.HasSuffix(nameOrPath, ".json") {
		dir := getenv("XDG_CONFIG_HOME")
		if dir == "" {
			home := getenv("HOME")
			if home == "" {
				return natsContext{}, fmt.Errorf("NATS_CONTEXT: neither XDG_CONFIG_HOME nor HOME is set to find context %q in: give the path of its file", nameOrPath)
			}
			dir = filepath.Join(home, ".config")
		}
		path = filepath.Join(dir, "nats", "context", nameOrPath+".json")
	}
	ctx := natsContext{path: path}
	b, err := readFile(field{value: path, from: "NATS_CONTEXT"}, maxNATSFile)
	if err != nil {
		return ctx, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		// Not the decoder's message: it quotes the character at fault,
		// which may belong to a password.
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return ctx, fmt.Errorf("%s: not a context file: not JSON (byte %d)", ctx.from(""), syntax.Offset)
		}
		return ctx, fmt.Errorf("%s: not a context file: want a JSON object", ctx.from(""))
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if _, known := contextFields[name]; known || isZeroJSON(fields[name]) {
			continue
		}
		why, known := unsupported[name]
		if !known {
			why = "not a field tallyfy-deleter knows"
		}
		errs = append(errs, fmt.Errorf("%s is set: %s", ctx.from(name), why))
	}
	if len(errs) > 0 {
		return ctx, errors.Join(errs...)
	}
	if err := json.Unmarshal(b, &ctx); err != nil {
		return ctx, fmt.Errorf("%s: not a context file: %w", ctx.from(""), err)
	}
	ctx.expand(getenv)
	return ctx, nil
}

// isZeroJSON reports whether v is a JSON zero value: the nats CLI writes
// every field, most of them empty.
func isZeroJSON(v json.RawMessage) bool {
	switch string(bytes.TrimSpace(v)) {
	case `""`, `null`, `false`, `0`, `[]`, `{}`:
		return true
	}
	return false
}

// secretSchemes are the references the nats CLI resolves in a context's
// values (natscontext's resolvers); tallyfy-deleter resolves none but a
// file path.
var secretSchemes = []string{"env", "op", "nsc", "data", "file"}

// expand makes the context's paths what the nats CLI reads: file://
// removed, $VAR and a leading ~ expanded. Other references (op://, env://,
// ...) go to refused, as does a password that is one; any other password
// is taken literally, as the nats CLI takes it.
func (c *natsContext) expand(getenv func(string) string) {
	c.refused = map[string]error{}
	for _, p := range []struct {
		name string
		v    *string
	}{{"creds", &c.Creds}, {"nkey", &c.NKey}, {"cert", &c.Cert}, {"key", &c.Key}, {"ca", &c.CA}} {
		if *p.v == "" {
			continue
		}
		v := strings.TrimPrefix(*p.v, "file://")
		if s := scheme(v); s != "" {
			c.refused[p.name] = fmt.Errorf("%s: %s:// references are not supported: give a file path", c.from(p.name), s)
			continue
		}
		v = os.Expand(v, getenv)
		if v == "~" || strings.HasPrefix(v, "~/") {
			v = filepath.Join(getenv("HOME"), v[1:])
		}
		*p.v = v
	}
	if s := scheme(c.Password); slices.Contains(secretSchemes, s) {
		c.refused["password"] = fmt.Errorf("%s: references (%s:...) are not supported: use NATS_PASSWORD_FILE", c.from("password"), s)
	}
}

// scheme is the URI scheme v starts with, as natscontext sees one: two
// letters or more, so that C:\ is a path.
func scheme(v string) string {
	u, err := url.Parse(v)
	if err != nil || len(u.Scheme) < 2 {
		return ""
	}
	return u.Scheme
}
