package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a private certificate authority made for one test. It issues
// certificates good for both ends of a connection, and keeps every PEM in
// files of the test's temporary directory, the files NATS_TLS_CA,
// NATS_TLS_CERT and NATS_TLS_KEY name.
//
//	ca := testutil.NewCA(t, "test CA")
//	ns := testutil.JetStreamWith(t, testutil.NATSOptions{TLS: ca.ServerTLS(t, true)})
//	client := ca.Issue(t, "worker")
//	// NATS_TLS_CA=ca.File NATS_TLS_CERT=client.CertFile NATS_TLS_KEY=client.KeyFile
type CA struct {
	// PEM is the CA's certificate; File holds it.
	PEM  []byte
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// Cert is a certificate a CA issued, with its key.
type Cert struct {
	TLS tls.Certificate
	// CertPEM and KeyPEM are what CertFile and KeyFile hold.
	CertPEM, KeyPEM   []byte
	CertFile, KeyFile string
}

// NewCA makes a self-signed CA named name, valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testutil.NewCA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testutil.NewCA: %v", err)
	}
	ca := &CA{cert: cert, key: key, dir: t.TempDir(), PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.File = writePEM(t, ca.dir, "ca.pem", ca.PEM)
	return ca
}

// Pool holds the CA alone: what a client or server trusting only it uses.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue makes a certificate named name, for server and client
// authentication; hosts (IP addresses or DNS names) are the names a server
// answers to. Its files are named after name.
func (ca *CA) Issue(t testing.TB, name string, hosts ...string) *Cert {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testutil: issuing %s: %v", name, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testutil: issuing %s: %v", name, err)
	}
	c := &Cert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		t.Fatalf("testutil: issuing %s: %v", name, err)
	}
	c.CertFile = writePEM(t, ca.dir, name+".pem", c.CertPEM)
	c.KeyFile = writePEM(t, ca.dir, name+"-key.pem", c.KeyPEM)
	return c
}

// ServerTLS is the TLS configuration of a server on 127.0.0.1 and
// localhost with a certificate the CA issued; with mutual, the server also
// requires a client certificate the CA issued. It goes in
// NATSOptions.TLS.
func (ca *CA) ServerTLS(t testing.TB, mutual bool) *tls.Config {
	t.Helper()
	srv := ca.Issue(t, "nats-server", "127.0.0.1", "::1", "localhost")
	cfg := &tls.Config{Certificates: []tls.Certificate{srv.TLS}, MinVersion: tls.VersionTLS12}
	if mutual {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = ca.Pool()
	}
	return cfg
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testutil: generating a key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testutil: serial number: %v", err)
	}
	return n
}

func writePEM(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return path
}
