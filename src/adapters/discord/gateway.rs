//! The gateway side: slash commands, buttons, autocompletion and channel messages become
//! [`Inbound`] events for the router; [`run`] connects and serves until shutdown.

use super::*;

/// The gateway's events, turned into the router's.
struct Handler {
    outbound: Arc<DiscordOutbound>,
    router: Router,
    guild_id: Option<u64>,
    workspace_dir: PathBuf,
    /// Interrupted plans are announced on the first READY only, not after each reconnect.
    announced: AtomicBool,
    /// A fatal gateway problem seen by a handler (e.g. the commands could not be registered).
    failed: CancellationToken,
}

fn membership(guild: Option<GuildId>, member: Option<&Member>) -> Option<Membership> {
    let guild = guild?;
    Some(Membership {
        guild: guild.get().to_string(),
        roles: member
            .map(|m| m.roles.iter().map(|r| r.get().to_string()).collect())
            .unwrap_or_default(),
    })
}

/// A slash command's options as the router's argument text: `/plan`'s slug, then description.
fn command_args(command: &CommandInteraction) -> String {
    let value = |name: &str| {
        command
            .data
            .options
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| match &o.value {
                CommandDataOptionValue::String(s) => Some(s.trim().to_string()),
                _ => None,
            })
            .unwrap_or_default()
    };
    match command.data.name.as_str() {
        "plan" => format!("{} {}", value("slug"), value("description"))
            .trim()
            .to_string(),
        _ => String::new(),
    }
}

fn registered_commands() -> Vec<CreateCommand> {
    COMMANDS
        .iter()
        .map(|spec| {
            let command = CreateCommand::new(spec.name).description(spec.menu);
            if spec.command != ChatCommand::Plan {
                return command;
            }
            command
                .add_option(
                    CreateCommandOption::new(
                        CommandOptionType::String,
                        "slug",
                        "A short name: lower-case letters, digits and dashes",
                    )
                    .required(true)
                    .max_length(64)
                    .set_autocomplete(true),
                )
                .add_option(
                    CreateCommandOption::new(
                        CommandOptionType::String,
                        "description",
                        "The idea, in a sentence or a few",
                    )
                    .max_length(4000),
                )
        })
        .collect()
}

impl Handler {
    async fn on_command(&self, ctx: &Context, command: CommandInteraction) {
        let chat = chat_key(command.channel_id);
        let args = command_args(&command);
        let mut inbound = Inbound {
            chat,
            user: command.user.id.get().to_string(),
            private: command.guild_id.is_none(),
            kind: InboundKind::Command {
                name: command.data.name.clone(),
                args: args.clone(),
            },
            interaction: None,
            membership: membership(command.guild_id, command.member.as_deref()),
            event: Some(format!("discord-interaction:{}", command.id)),
        };
        // Allowed users' commands are shown to the channel (as a typed command would be);
        // a stranger's refusal only to the stranger.
        let public = self.router.authorize(&inbound);
        let deferred = if public {
            command.defer(&ctx.http).await
        } else {
            command.defer_ephemeral(&ctx.http).await
        };
        if let Err(e) = deferred {
            tracing::warn!(error = %e, "could not acknowledge a command");
            return;
        }
        if public {
            inbound.interaction = Some(Deferred::Public.token(&command.token));
            let echo: String = format!("**/{}** {args}", command.data.name)
                .chars()
                .take(MESSAGE_LIMIT)
                .collect();
            let (outbound, channel, token) = (
                self.outbound.clone(),
                command.channel_id.get(),
                command.token.clone(),
            );
            tokio::spawn(async move {
                let result = outbound.edit_original(channel, &token, &echo).await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "could not show a command");
                }
            });
        } else {
            inbound.interaction = Some(Deferred::Private.token(&command.token));
        }
        self.router.handle(inbound).await;
    }

    async fn on_button(&self, ctx: &Context, press: ComponentInteraction) {
        if let Err(e) = press.defer(&ctx.http).await {
            tracing::warn!(error = %e, "could not acknowledge a button");
            return;
        }
        let interaction = Deferred::Button.token(&press.token);
        let chat = chat_key(press.channel_id);
        let Some((action, revision)) = Offer::parse_payload(&press.data.custom_id) else {
            let _ = self
                .outbound
                .answer(
                    press.channel_id.get(),
                    &interaction,
                    crate::conversation::copy::FOREIGN_BUTTON,
                )
                .await;
            return;
        };
        let inbound = Inbound {
            chat,
            user: press.user.id.get().to_string(),
            private: press.guild_id.is_none(),
            kind: InboundKind::Button { action, revision },
            interaction: Some(interaction),
            membership: membership(press.guild_id, press.member.as_ref()),
            event: Some(format!("discord-interaction:{}", press.id)),
        };
        self.router.handle(inbound).await;
    }

    /// `/plan`'s slug completed from the existing workspaces (for allowed users only).
    async fn on_autocomplete(&self, ctx: &Context, command: CommandInteraction) {
        let probe = Inbound {
            chat: chat_key(command.channel_id),
            user: command.user.id.get().to_string(),
            private: command.guild_id.is_none(),
            kind: InboundKind::Text(String::new()),
            interaction: None,
            membership: membership(command.guild_id, command.member.as_deref()),
            event: None,
        };
        let typed = command
            .data
            .autocomplete()
            .map(|o| o.value.to_ascii_lowercase())
            .unwrap_or_default();
        let slugs = if self.router.authorize(&probe) {
            channel_slugs(&self.workspace_dir, &probe.chat.to_string(), &typed)
        } else {
            Vec::new()
        };
        let mut choices = CreateAutocompleteResponse::new();
        for slug in slugs {
            choices = choices.add_string_choice(slug.clone(), slug);
        }
        let response = CreateInteractionResponse::Autocomplete(choices);
        if let Err(e) = command.create_response(&ctx.http, response).await {
            tracing::warn!(error = %e, "could not answer an autocomplete");
        }
    }
}

/// Up to 25 of this channel's slugs starting with `typed`, sorted: another channel's plans are
/// neither offered nor revealed.
fn channel_slugs(dir: &std::path::Path, chat: &str, typed: &str) -> Vec<String> {
    let mut slugs = crate::planning::workspace::owned_slugs(dir, chat);
    slugs.retain(|slug| slug.starts_with(typed));
    slugs.truncate(25);
    slugs
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(bot = %ready.user.name, guilds = ready.guilds.len(), "Discord front end connected");
        self.outbound.set_application(ready.application.id.get());
        let commands = registered_commands();
        let registered = match self.guild_id {
            Some(guild) => GuildId::new(guild)
                .set_commands(&ctx.http, commands)
                .await
                .map(|c| c.len()),
            None => Command::set_global_commands(&ctx.http, commands)
                .await
                .map(|c| c.len()),
        };
        match registered {
            Ok(count) => tracing::info!(count, guild = ?self.guild_id, "registered slash commands"),
            Err(e) => {
                tracing::error!(error = %e, "could not register the slash commands");
                self.failed.cancel();
                return;
            }
        }
        if !self.announced.swap(true, Ordering::SeqCst) {
            self.router.announce_interrupted(ADAPTER).await;
            self.router.handle_kept(ADAPTER).await;
        }
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(command) => self.on_command(&ctx, command).await,
            Interaction::Component(press) => self.on_button(&ctx, press).await,
            Interaction::Autocomplete(command) => self.on_autocomplete(&ctx, command).await,
            _ => {}
        }
    }

    async fn message(&self, _ctx: Context, message: serenity::all::Message) {
        let files: Vec<FileRef> = message
            .attachments
            .iter()
            .map(|a| FileRef {
                id: a.url.clone(),
                name: Some(a.filename.clone()),
                mime: a.content_type.clone(),
                size: Some(u64::from(a.size)),
            })
            .collect();
        if message.author.bot || (message.content.trim().is_empty() && files.is_empty()) {
            return;
        }
        let guild = message.guild_id;
        let member_roles = message
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.get().to_string()).collect())
            .unwrap_or_default();
        let inbound = Inbound {
            membership: guild.map(|g| Membership {
                guild: g.get().to_string(),
                roles: member_roles,
            }),
            event: Some(format!("discord-message:{}", message.id)),
            ..Inbound::from_text(
                chat_key(message.channel_id),
                &message.author.id.get().to_string(),
                guild.is_none(),
                &message.content,
            )
        };
        let inbound = if files.is_empty() {
            inbound
        } else {
            Inbound {
                kind: InboundKind::Files {
                    files,
                    caption: message.content.clone(),
                },
                ..inbound
            }
        };
        self.router.handle(inbound).await;
    }
}

/// Connects to the gateway and serves until `shutdown` (or a fatal gateway error): the shards
/// `DISCORD_SHARDS` names (all of them when alone on `shared/…`), or among replicas with
/// `shared/…`, the shards this planbot leases.
pub async fn run(
    outbound: Arc<DiscordOutbound>,
    router: Router,
    settings: DiscordSettings,
    shutdown: CancellationToken,
) -> Result<(), String> {
    match (settings.shards, settings.leases.clone()) {
        (Some(shards), Some(leases)) if shards.shared => {
            lease_shards(outbound, router, settings, shards.total, leases, shutdown).await
        }
        (shards, _) => {
            let range = shards.map(|s| (s.first, s.last, s.total));
            connect(outbound, router, settings, range, shutdown).await
        }
    }
}

/// What a shard's lease is called in the table of leases.
const SHARD_LEASE: &str = "discord-shard";
/// What a replica's presence is called there: the shards are divided among those alive.
const REPLICA_LEASE: &str = "discord-replica";

fn shard_lease(shard: u32) -> ChatKey {
    ChatKey::new(SHARD_LEASE, shard.to_string())
}

/// `DISCORD_SHARDS=shared/total` among replicas: this planbot connects the shards it leases, up
/// to its share: the total divided among the replicas alive (each holds a presence lease),
/// rounded up. A shard over the share is given back (a replica came back or joined), one a
/// tick, for one with room to take; a shard free for a whole lease is taken whatever the share,
/// so every shard is served while one replica lives. A shard whose lease passed to another
/// planbot (this one was paused past it) is disconnected. The leases are renewed with the
/// chats' (see the router's `serve_shared`) and given back on a clean stop.
async fn lease_shards(
    outbound: Arc<DiscordOutbound>,
    router: Router,
    settings: DiscordSettings,
    total: u32,
    leases: Arc<dyn crate::store::Shared>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    type Connected = (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), String>>,
    );
    let presence = ChatKey::new(REPLICA_LEASE, uuid::Uuid::new_v4().to_string());
    let lease = leases.lease();
    let mut connected: std::collections::HashMap<u32, Connected> = Default::default();
    let mut free_since: std::collections::HashMap<u32, tokio::time::Instant> = Default::default();
    let mut tick = tokio::time::interval(lease / 3);
    let prefix = format!("{SHARD_LEASE}:");
    let mut first = true;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = leases.acquire(&presence).await {
            tracing::warn!(error = %e, "could not renew this replica's presence");
            continue;
        }
        if std::mem::take(&mut first) {
            // Replicas starting together see each other before dividing the shards.
            continue;
        }
        // A shard's client that ended by itself failed (the commands could not be registered).
        let ended = connected
            .iter()
            .find(|(_, (_, task))| task.is_finished())
            .map(|(shard, _)| *shard);
        if let Some((shard, (_, task))) = ended.and_then(|s| connected.remove_entry(&s)) {
            let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
            break result.and(Err(format!("Discord shard {shard} stopped")));
        }
        let (held, alive) = match (
            leases.leases(&prefix).await,
            leases.leases(&format!("{REPLICA_LEASE}:")).await,
        ) {
            (Ok(held), Ok(alive)) => (
                held.into_iter()
                    .map(|(key, _)| key)
                    .collect::<std::collections::HashSet<ChatKey>>(),
                alive.len(),
            ),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "could not read the Discord shards' leases");
                continue;
            }
        };
        let share = total.div_ceil(u32::try_from(alive).unwrap_or(1).max(1)) as usize;
        if connected.len() > share
            && let Some(shard) = connected.keys().max().copied()
            && let Some((stop, task)) = connected.remove(&shard)
        {
            tracing::info!(
                shard,
                share,
                "giving a Discord shard back to a replica with room"
            );
            stop.cancel();
            let _ = task.await;
            if let Err(e) = leases.release(&shard_lease(shard)).await {
                tracing::warn!(shard, error = %e, "could not give a Discord shard's lease back");
            }
            continue;
        }
        for shard in 0..total {
            let key = shard_lease(shard);
            if connected.contains_key(&shard) {
                if !leases.holds(&key) {
                    tracing::warn!(
                        shard,
                        "a Discord shard passed to another planbot; disconnecting it"
                    );
                    if let Some((stop, _)) = connected.remove(&shard) {
                        stop.cancel();
                    }
                }
                continue;
            }
            if held.contains(&key) {
                free_since.remove(&shard);
                continue;
            }
            let since = *free_since
                .entry(shard)
                .or_insert_with(tokio::time::Instant::now);
            if connected.len() >= share && since.elapsed() < lease {
                continue;
            }
            match leases.acquire(&key).await {
                Ok(Some(_)) => {
                    free_since.remove(&shard);
                    tracing::info!(shard, total, "took a Discord shard's lease; connecting it");
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(connect(
                        outbound.clone(),
                        router.clone(),
                        settings.clone(),
                        Some((shard, shard, total)),
                        stop.clone(),
                    ));
                    connected.insert(shard, (stop, task));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(shard, error = %e, "could not take a Discord shard's lease")
                }
            }
        }
    };
    for (shard, (stop, task)) in connected {
        stop.cancel();
        let _ = task.await;
        if let Err(e) = leases.release(&shard_lease(shard)).await {
            tracing::warn!(shard, error = %e, "could not give a Discord shard's lease back");
        }
    }
    let _ = leases.release(&presence).await;
    result
}

/// One gateway client for the shards `range` names (first, last, total; `None`: the one shard
/// of a small bot) until `shutdown` or a fatal gateway error.
async fn connect(
    outbound: Arc<DiscordOutbound>,
    router: Router,
    settings: DiscordSettings,
    range: Option<(u32, u32, u32)>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let intents = GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT;
    let failed = CancellationToken::new();
    let handler = Handler {
        outbound: outbound.clone(),
        router,
        guild_id: settings.guild_id,
        workspace_dir: settings.workspace_dir,
        announced: AtomicBool::new(false),
        failed: failed.clone(),
    };
    // The client takes its own Http by value; the outbound's (for interaction answers) gets the
    // application id at READY like this one.
    let base = settings.api_url.trim_end_matches('/');
    let http = serenity_http(&settings.token, base);
    let mut client = serenity::client::ClientBuilder::new_with_http(http, intents)
        .event_handler(handler)
        .await
        .map_err(|e| format!("Discord client: {e}"))?;
    let shards = client.shard_manager.clone();
    let start = async {
        match range {
            // serenity's range is read with both ends included.
            Some((first, last, total)) => client.start_shard_range(first..last, total).await,
            None => client.start().await,
        }
    };
    let result = tokio::select! {
        result = start => result.map_err(|e| format!("Discord gateway: {e}")),
        _ = shutdown.cancelled() => Ok(()),
        _ = failed.cancelled() => Err("Discord: the slash commands could not be registered".to_string()),
    };
    shards.shutdown_all().await;
    result
}
