import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Console, Effect, Exit, Cause } from "effect"
import { Argument, Command, Flag } from "effect/cli"

const stats = Command.make("stats", {}, () => Console.log("stats!")).pipe(Command.withDescription("Show counts"))
const show = Command.make("show", { id: Argument.Int("update_id") }, ({ id }) => Console.log("show", id)).pipe(Command.withDescription("Show one update"))
const retry = Command.make("retry", {
  id: Argument.Int("update_id").pipe(Argument.optional),
  allDead: Flag.Boolean("all-dead").pipe(Flag.withDefault(false))
}, (a) => Console.log("retry", a))
const purge = Command.make("purge", {
  olderThan: Flag.String("older-than"),
  includeDead: Flag.Boolean("include-dead").pipe(Flag.withDefault(false))
}, (a) => Console.log("purge", a))
const root = Command.make("ops").pipe(Command.withSubcommands([stats, show, retry, purge]))

Command.run(root, { version: "0.1.0" }).pipe(
  Effect.exit,
  Effect.flatMap((exit) => Console.log("EXIT", Exit.isSuccess(exit) ? "ok" : Cause.pretty(exit.cause))),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
