"""The bot's side of a job, from the command to its answer.

`Desk.start` admits a job to the scheduler, defers the user's message, downloads and checks the seed and
writes the job into the journal; `follow` keeps the message up to date while the job waits and runs, and
`finish` answers it through `Delivery` with its kind's buttons, exactly once. On SIGTERM the people waiting
are told that their piece comes after the restart, and the next start answers what is left in the journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import discord

from bot import codec
from bot.aio import cancel_and_wait
from bot.chat.answers import say_privately
from bot.chat.buttons import piece_view
from bot.chat.delivery import FOLLOWUP_WINDOW, Delivery
from bot.chat.reply import SeedStore, progress_line
from bot.errors import BadSeed, reference
from bot.music.midi import SeedLimits, read_midi
from bot.options import Options
from bot.queue.jobs import JobResult, JobSpec

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds between edits of the deferred message
SEED_NAME_MAX = 100  # characters of a seed's file name kept: it names the piece and its files
RESTART_LINE = "⏸ Étude is restarting; your piece is safe and will come after the restart."
SETTLE_WAIT = 5.0  # seconds the restart notice waits for a job just admitted to be deferred and journaled
# Other job kinds (/harmonize) register how their file is checked before the queue and which buttons
# their reply carries; a kind not listed is a composition.
SEED_CHECKS: dict[str, Callable[[bytes, str, SeedLimits], object]] = {}
REPLY_VIEWS: dict[str, Callable[[Options, str | None], discord.ui.View]] = {}


@dataclass
class Waiting:
    """A user waiting for a job, and their deferred message.

    Edits of the message take turns under `lock`, and progress lines are skipped once the bot drains: so
    the restart notice is the last edit, even when it is sent while the first "queued" line is on its way.
    """

    interaction: discord.Interaction
    # Set once the message exists and the job is in the journal (or the job was refused): from then on
    # the job survives the bot stopping, and the restart notice may say so.
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Desk:
    """Where the commands' jobs are taken in and answered: `ComposeCog` holds it and /harmonize uses it too,
    so one restart notice reaches everyone waiting."""

    def __init__(self, bot):
        self.bot = bot
        self.settings = bot.settings
        self.seeds = SeedStore(self.settings.state_dir, self.settings.seed_store_max_bytes)
        self.active: set[asyncio.Task] = set()
        # Job id -> who waits for it: from admission on, so that a SIGTERM a moment later tells them too.
        self.live: dict[str, Waiting] = {}
        self.delivery = Delivery(bot, keep_seconds=self.settings.delivery_keep_seconds)
        self.recovery: asyncio.Task | None = None

    @property
    def scheduler(self):
        return self.bot.runtime.scheduler

    async def start(
        self,
        interaction: discord.Interaction,
        options: Options,
        *,
        seed_attachment: discord.Attachment | None = None,
        seed_bytes: bytes | None = None,
        seed_name: str = "seed",
        kind: str = "compose",
    ) -> None:
        task = asyncio.current_task()
        if task is not None:  # so that closing the bot stops waiting; the job itself stays queued
            self.active.add(task)
            task.add_done_callback(self.active.discard)
        spec = JobSpec(
            options=codec.record(options),
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            application_id=interaction.application_id,
            interaction_token=interaction.token,
            interaction_created=interaction.created_at.timestamp(),
            attachment_limit=interaction.filesize_limit,
            kind=kind,
        )
        # A refusal (queue full, too many of yours) is answered by the error handler.
        place = self.scheduler.admit(spec)
        waiting = self.live[spec.job_id] = Waiting(interaction)
        try:
            await interaction.response.defer(thinking=True)
            if seed_attachment is not None:
                seed_bytes = await seed_attachment.read()
                seed_name = seed_attachment.filename.rsplit(".", 1)[0][:SEED_NAME_MAX]
            seed_key = None
            if seed_bytes is not None:
                # A quick check here answers a bad seed at once instead of after the queue.
                check = SEED_CHECKS.get(kind, read_midi)
                await asyncio.to_thread(check, seed_bytes, seed_name, self.settings.seed_limits())
                spec.with_seed(seed_bytes, seed_name)
                seed_key = await asyncio.to_thread(self.seeds.put, seed_bytes) if kind != "continue" else None
            spec.submitted = time.time()
            # In the journal before anything else can wait: a SIGTERM from here on finds the job safe, and
            # the bot that comes back runs it (`Scheduler.run` adds it again, which changes nothing).
            await self.scheduler.journal.add(spec)
        except (BadSeed, discord.HTTPException) as e:
            self.live.pop(spec.job_id, None)
            waiting.settled.set()
            self.scheduler.release(spec.job_id)
            message = (
                str(e) if isinstance(e, BadSeed) else "I couldn't download the seed file; please try again"
            )
            await self._say_privately(interaction, message)
            return
        except BaseException:
            self.live.pop(spec.job_id, None)
            waiting.settled.set()
            self.scheduler.release(spec.job_id)
            raise
        waiting.settled.set()
        try:
            await self._progress(waiting, progress_line({"stage": "queued", "place": place}))
            await self.follow(waiting, spec, options, seed_key)
        finally:
            self.live.pop(spec.job_id, None)

    async def follow(self, waiting: Waiting, spec: JobSpec, options: Options, seed_key: str | None) -> None:
        """Run the job, keep the deferred message up to date, and deliver the result."""
        interaction = waiting.interaction
        latest: dict = {"stage": "queued", "place": self.scheduler.place(spec.job_id)}
        changed = asyncio.Event()

        async def on_progress(event: dict) -> None:
            latest.clear()
            latest.update(event)
            changed.set()

        async def edits() -> None:
            shown = progress_line(latest)
            while True:
                await asyncio.sleep(PROGRESS_EVERY)
                place = self.scheduler.place(spec.job_id)
                if place:
                    latest.update({"stage": "queued", "place": place})
                line = progress_line(latest)
                fresh = time.time() - spec.interaction_created < FOLLOWUP_WINDOW
                if line != shown and fresh:
                    shown = line
                    await self._progress(waiting, line)

        editor = asyncio.create_task(edits())
        try:
            result = await self.scheduler.run(spec, on_progress)
        finally:
            await cancel_and_wait([editor])
            self.live.pop(spec.job_id, None)
        await self.finish(spec, result, options, seed_key, interaction)

    async def finish(
        self,
        spec: JobSpec,
        result: JobResult,
        options: Options | None = None,
        seed_key: str | None = None,
        interaction: discord.Interaction | None = None,
    ) -> None:
        """Count the result and answer the user through `Delivery`, exactly once even when a job ran twice;
        a piece comes with its kind's buttons (re-roll and continue for a composition).

        A bot that closes while the answer is on its way (Discord failing, say) leaves the job in the
        journal and its result in the queue: the next start answers it.
        """
        self.bot.metrics.job(result.ok, time.time() - spec.submitted)
        if not await self.scheduler.claim_delivery(spec.job_id):
            log.info("job %s was answered already; this result is dropped", spec.job_id)
            await self.scheduler.answered(spec.job_id, False)
            return
        # From here, only the bot closing (a cancel) leaves the job for the next start; whatever else fails
        # is logged, and the piece still goes out, without the extras that failed.
        view = self._buttons(spec, result, options, seed_key) if result.ok else None
        webhook = interaction.followup if interaction is not None else None
        try:
            try:
                where = await self.delivery.deliver(spec, result, view, webhook)
            except asyncio.CancelledError:
                raise
            except Exception:
                ref = reference(spec.job_id)
                log.exception("job %s: the answer failed (ref %s); sending the files alone", spec.job_id, ref)
                where = await self.delivery.deliver(spec, result, None, webhook, plain=True)
        except asyncio.CancelledError:  # closing before the user has it: the next start answers it
            self.scheduler.abandon(spec.job_id)
            raise
        log.info("job %s answered: %s", spec.job_id[:12], where)
        # "Answered" is written as soon as the user has the piece (or Discord refused it to the end), and
        # even if the bot starts closing meanwhile: a restart must not send it again.
        await asyncio.shield(self.scheduler.answered(spec.job_id, where != "nowhere"))
        if where == "followup" and result.ok:
            await self.delivery.done(spec, result, webhook)

    def _buttons(
        self, spec: JobSpec, result: JobResult, options: Options | None, seed_key: str | None
    ) -> discord.ui.View | None:
        """The buttons under a finished piece; None (and a log line with the job's reference) when they
        cannot be made: a piece is never held back for its buttons."""
        try:
            return REPLY_VIEWS.get(spec.kind, piece_view)(
                options or codec.from_record(spec.options), seed_key
            )
        except Exception:
            log.exception("job %s: no buttons under the piece (ref %s)", spec.job_id, reference(spec.job_id))
            return None

    def start_recovery(self) -> None:
        """Answer, in the background, the jobs queued before the bot restarted."""
        self.recovery = asyncio.create_task(self.recover_pending(), name="etude-recover")

    async def announce_restart(self) -> None:
        """The bot is stopping: refuse new jobs and tell everyone waiting that their piece will follow.

        A job admitted a moment ago may still be deferring its message or not yet be in the journal: the
        notice waits for both (a few seconds at most), so that the bot closes only once what it promised is
        safe; a progress line still on its way is sent before the notice, not after.
        """
        self.scheduler.drain()

        async def tell(job_id: str, waiting: Waiting) -> None:
            try:
                await asyncio.wait_for(waiting.settled.wait(), SETTLE_WAIT)
            except TimeoutError:
                return
            if job_id not in self.live:  # refused or answered meanwhile: its message says so already
                return
            if time.time() - waiting.interaction.created_at.timestamp() < FOLLOWUP_WINDOW:
                async with waiting.lock:
                    await self._edit(waiting.interaction, RESTART_LINE)

        await asyncio.gather(*(tell(j, w) for j, w in list(self.live.items())))

    async def stop_waiting(self) -> None:
        """Stop waiting on jobs (the bot is closing); their results are answered by the next start."""
        await cancel_and_wait([self.recovery, *self.active])

    async def recover_pending(self) -> None:
        """Jobs queued before a restart of the bot: wait for their results and answer them."""
        await self.bot.wait_until_ready()
        pending = await self.scheduler.journal.pending()
        mine = self.bot.application_id
        # Another bot on the same Redis answers its own jobs: this one touches only its application's.
        pending = [(s, k) for s, k in pending if not mine or not s.application_id or s.application_id == mine]
        # Jobs this process admitted since it started are followed already; only older ones are recovered.
        ours = {*self.scheduler.waiting, *self.scheduler.running}
        pending = [(s, k) for s, k in pending if s.job_id not in ours]
        if pending:
            log.info("answering %d jobs queued before the restart", len(pending))
        for spec, kicked in pending:
            task = asyncio.create_task(self._recover(spec, kicked))
            self.active.add(task)
            task.add_done_callback(self.active.discard)

    async def _recover(self, spec: JobSpec, kicked: bool) -> None:
        self.scheduler.track(spec)
        try:
            if await self.scheduler.journal.delivered(
                spec.job_id
            ):  # answered; the bot stopped before tidying
                await self.scheduler.answered(spec.job_id, True)
                return
            result = await self.scheduler.recover(spec, kicked)
            keep = spec.seed_b64 and spec.kind != "continue"
            seed_key = await asyncio.to_thread(self.seeds.put, spec.seed) if keep else None
            await self.finish(spec, result, None, seed_key)
        except Exception:
            log.exception("could not answer recovered job %s", spec.job_id)
        finally:
            self.scheduler.release(spec.job_id)

    # -- small helpers ----------------------------------------------------------------------------------------
    async def _progress(self, waiting: Waiting, line: str) -> None:
        """A progress line, unless the bot is draining: then the restart notice stays."""
        async with waiting.lock:
            if not self.scheduler.draining:
                await self._edit(waiting.interaction, line)

    async def _edit(self, interaction: discord.Interaction, content: str) -> None:
        try:
            await interaction.edit_original_response(content=content)
        except discord.HTTPException as e:  # a progress line is not worth failing a job over
            log.debug("progress edit failed: %s", e)

    async def _say_privately(self, interaction: discord.Interaction, message: str) -> None:
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
        await say_privately(interaction, message)
