package ipoibd_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/netip"
	"time"

	"github.com/ipoibd/ipoibd"
)

// A TCP echo between two hosts of a simulated fabric: one listens, the
// other dials and reads its words back.
func Example_tcpEcho() {
	fabric, err := ipoibd.NewSimFabric(ipoibd.SimConfig{Hosts: 2})
	if err != nil {
		log.Fatal(err)
	}
	defer fabric.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	server, err := ipoibd.Open(ctx, ipoibd.Config{Device: fabric.Device(0), Name: "echo-server",
		Addr: netip.MustParsePrefix("10.66.0.1/24")})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	client, err := ipoibd.Open(ctx, ipoibd.Config{Device: fabric.Device(1), Name: "echo-client",
		Addr: netip.MustParsePrefix("10.66.0.2/24")})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ln, err := server.Listen("tcp", ":7")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	conn, err := client.DialContext(ctx, "tcp", "10.66.0.1:7")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "hello over IPoIB")
	buf := make([]byte, len("hello over IPoIB"))
	if _, err := io.ReadFull(conn, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s -> %s: %s\n", client.Addr().Addr(), server.Addr().Addr(), buf)
	// Output: 10.66.0.2 -> 10.66.0.1: hello over IPoIB
}

// A UDP exchange: the second host leases its address from a DHCP server
// on the first, then sends it a datagram and gets an answer.
func Example_udp() {
	fabric, err := ipoibd.NewSimFabric(ipoibd.SimConfig{Hosts: 2})
	if err != nil {
		log.Fatal(err)
	}
	defer fabric.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	server, err := ipoibd.Open(ctx, ipoibd.Config{Device: fabric.Device(0), Name: "udp-server",
		Addr:       netip.MustParsePrefix("10.67.0.1/24"),
		DHCPServer: &ipoibd.DHCPServer{PoolStart: netip.MustParseAddr("10.67.0.100"), PoolEnd: netip.MustParseAddr("10.67.0.199")}})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	client, err := ipoibd.Open(ctx, ipoibd.Config{Device: fabric.Device(1), Name: "udp-client", DHCP: true})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	pc, err := server.ListenPacket("udp", ":5353")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo([]byte(fmt.Sprintf("got %q", buf[:n])), from)
	}()

	conn, err := client.DialContext(ctx, "udp", "10.67.0.1:5353")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leased in 10.67.0.100-199: %v\n", client.Addr().Addr().Compare(netip.MustParseAddr("10.67.0.100")) >= 0)
	fmt.Printf("answer: %s\n", buf[:n])
	// Output:
	// leased in 10.67.0.100-199: true
	// answer: got "ping"
}
