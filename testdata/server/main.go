// Command server is the worker program of the recluster tests. What it
// does is chosen by flags and, so that a "deploy" can change it between
// generations, by the first word of the file named by -modefile:
//
//	ok          listen and serve (default)
//	broken      exit 1 at once, like a deploy that cannot start
//	late        wait -delay before asking for a listener
//	ready       listen, wait -delay, then say ready
//	never-ready listen and serve but never say ready
//	ready-if-0  like ready in slot 0, like never-ready elsewhere
//	hang        never ask for a listener
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/recluster-go/recluster/worker"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	mode := flag.String("mode", "ok", "behaviour when -modefile is absent")
	modeFile := flag.String("modefile", "", "file whose first word overrides -mode")
	delay := flag.Duration("delay", 0, "delay for the late and ready modes")
	useTLS := flag.Bool("tls", false, "serve HTTPS (and h2) with a self-signed certificate")
	h2c := flag.Bool("h2c", false, "also serve HTTP/2 without TLS (prior knowledge)")
	flag.Parse()
	if *modeFile != "" {
		if b, err := os.ReadFile(*modeFile); err == nil && len(strings.Fields(string(b))) > 0 {
			*mode = strings.Fields(string(b))[0]
		}
	}
	switch *mode {
	case "broken":
		fmt.Fprintln(os.Stderr, "server: broken on purpose")
		os.Exit(1)
	case "hang":
		<-worker.Disconnected()
		return
	case "late":
		time.Sleep(*delay)
	}
	ln, err := worker.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
	if *mode == "ready" || (*mode == "ready-if-0" && worker.ID() == 0) {
		go func() {
			time.Sleep(*delay)
			worker.Ready()
		}()
	}
	id, pid, gen := strconv.Itoa(worker.ID()), strconv.Itoa(os.Getpid()), strconv.Itoa(worker.Generation())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Id", id)
		w.Header().Set("X-Worker-Pid", pid)
		w.Header().Set("X-Generation", gen)
		if r.URL.Query().Get("until") == "disconnect" {
			<-worker.Disconnected() // answer once the drain has begun
		}
		if ms, err := strconv.Atoi(r.URL.Query().Get("sleep")); err == nil {
			if r.URL.Query().Get("flush") != "" {
				// Let the client see the request is in flight.
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
			}
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		switch r.URL.Path {
		case "/args":
			fmt.Fprint(w, strings.Join(flag.Args(), " "))
		case "/env":
			fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
		case "/uid":
			fmt.Fprint(w, os.Getuid(), " ", os.Getgid())
		case "/crash":
			os.Exit(3)
		case "/echo":
			io.Copy(w, r.Body)
		case "/retire":
			worker.Retire()
			fmt.Fprint(w, "retiring")
		default:
			fmt.Fprintf(w, "worker %s pid %s gen %s", id, pid, gen)
		}
	})
	srv := &http.Server{Handler: mux}
	if *useTLS {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
	}
	if *h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	if err := worker.Serve(srv, ln); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(4)
	}
}

// selfSigned makes a certificate for 127.0.0.1 that lives as long as the
// process.
func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
