// Command example walks through the Parley API with the generated Go client: it registers a new
// user, logs in, creates an agent and a session, sends a message and prints the reply as it
// streams in, ending with a line "completed: <message name> (<n> output tokens)".
//
//	PARLEY_SERVER=localhost:50051 go run ./cmd/example
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/parley-dev/parley/clients/go/parley"
	"github.com/parley-dev/parley/clients/go/parleyv1"
)

func main() {
	log.SetFlags(0)
	server := os.Getenv("PARLEY_SERVER")
	if server == "" {
		server = "localhost:50051"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, server, "Hello! In one sentence, what is a good name for a cat?"); err != nil {
		if info := parley.ErrorInfo(err); info != nil {
			log.Fatalf("example: %v (reason %s)", err, info.GetReason())
		}
		log.Fatalf("example: %v", err)
	}
}

func run(ctx context.Context, server, text string) error {
	conn, err := parley.Dial(server)
	if err != nil {
		return err
	}
	defer conn.Close()
	auth := parleyv1.NewAuthServiceClient(conn)

	suffix := make([]byte, 5)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	username, password := "go-example-"+hex.EncodeToString(suffix), "correct horse battery staple"
	user, err := auth.CreateUser(ctx, &parleyv1.CreateUserRequest{Username: username, Password: password})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	fmt.Printf("registered: %s (%s)\n", user.GetUser().GetName(), username)

	tokens, err := auth.CreateToken(ctx, &parleyv1.CreateTokenRequest{Username: username, Password: password})
	if err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	bearer := parley.Bearer(tokens.GetAccessToken())
	fmt.Printf("logged in: access token valid for %d s\n", tokens.GetExpiresIn())

	agent, err := parleyv1.NewAgentServiceClient(conn).CreateAgent(ctx, &parleyv1.CreateAgentRequest{
		Agent: &parleyv1.Agent{
			DisplayName:  "Guide",
			Instructions: "You are a concise, friendly guide.",
		},
	}, bearer)
	if err != nil {
		return fmt.Errorf("create agent: %w", err)
	}
	fmt.Printf("agent: %s\n", agent.GetAgent().GetName())

	session, err := parleyv1.NewSessionServiceClient(conn).CreateSession(ctx, &parleyv1.CreateSessionRequest{
		Session: &parleyv1.Session{Agent: agent.GetAgent().GetName(), Title: "Go example"},
	}, bearer)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	fmt.Printf("session: %s\n", session.GetSession().GetName())

	stream, err := parleyv1.NewChatServiceClient(conn).SendMessage(ctx, &parleyv1.SendMessageRequest{
		Session: session.GetSession().GetName(),
		Text:    text,
	}, bearer)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	fmt.Printf("you: %s\n", text)
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the stream ended without message_completed")
		}
		if err != nil {
			return fmt.Errorf("reply: %w", err)
		}
		switch e := event.GetEvent().(type) {
		case *parleyv1.ChatEvent_MessageAccepted:
			fmt.Print("agent: ")
		case *parleyv1.ChatEvent_TextDelta:
			fmt.Print(e.TextDelta.GetText())
		case *parleyv1.ChatEvent_MessageCompleted:
			message := e.MessageCompleted.GetMessage()
			fmt.Printf("\ncompleted: %s (%d output tokens)\n",
				message.GetName(), message.GetUsage().GetOutputTokens())
			return nil
		}
	}
}
